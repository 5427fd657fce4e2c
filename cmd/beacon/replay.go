package main

import (
	"context"
	"errors"
)

func runReplay(ctx context.Context, args []string, s stdio) error {
	return errors.New("replay: not built yet")
}
