package main

import (
	"compress/gzip"
	"errors"
	"io"
	"os"
	"strings"
)

// The commands' output files: a path, or - for stdout; a name ending in
// .gz is gzipped.

// createOutput opens path for writing (- is stdout), gzipping when the name
// ends in .gz. The returned function closes what was opened.
func createOutput(path string, stdout io.Writer) (io.Writer, func() error, error) {
	var w io.Writer = stdout
	var closeFile func() error = func() error { return nil }
	if path != "-" {
		f, err := os.Create(path)
		if err != nil {
			return nil, nil, err
		}
		w, closeFile = f, f.Close
	}
	if !strings.HasSuffix(path, ".gz") {
		return w, closeFile, nil
	}
	z, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
	if err != nil {
		closeFile()
		return nil, nil, err
	}
	return z, func() error { return errors.Join(z.Close(), closeFile()) }, nil
}

// writeTo writes one output with write and closes it.
func writeTo(path string, stdout io.Writer, write func(io.Writer) error) error {
	w, closeOut, err := createOutput(path, stdout)
	if err != nil {
		return err
	}
	return errors.Join(write(w), closeOut())
}
