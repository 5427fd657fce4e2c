package main

import (
	"context"
	"errors"
)

func runSimulate(ctx context.Context, args []string, s stdio) error {
	return errors.New("simulate: not built yet")
}
