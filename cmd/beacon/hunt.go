package main

import (
	"context"
	"errors"
)

func runHunt(ctx context.Context, args []string, s stdio) error {
	return errors.New("hunt: not built yet")
}
