//go:build !amd64

package mde

import "unsafe"

// quoteEnd is quoteEndGo where there is no assembly version.
func quoteEnd(p unsafe.Pointer, j, n int) int { return quoteEndGo(p, j, n) }
