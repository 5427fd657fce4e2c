//go:build !unix

package mde

import (
	"errors"
	"os"
)

func mapFile(*os.File, int64) ([]byte, error) { return nil, errors.New("no mmap") }

func unmapFile([]byte) {}

func releasePages([]byte) {}
