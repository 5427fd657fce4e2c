package mde

import "unsafe"

// quoteEnd is scanPlain over the n bytes at p: the index of the first
// byte at or after j that is a quote, a backslash or a control character,
// or n. In assembly (quote_amd64.s): sixteen bytes a step, where the
// eight-byte SWAR of quoteEndGo rebuilt its five masks for every word
// inside fastKeys' crowded registers.
//
//go:noescape
func quoteEnd(p unsafe.Pointer, j, n int) int
