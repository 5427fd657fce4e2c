package main

import (
	"context"
	"errors"
)

func runDemo(ctx context.Context, args []string, s stdio) error {
	return errors.New("demo: not built yet")
}
