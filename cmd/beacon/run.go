package main

import (
	"context"
	"errors"
)

func runRun(ctx context.Context, args []string, s stdio) error {
	return errors.New("run: not built yet")
}
