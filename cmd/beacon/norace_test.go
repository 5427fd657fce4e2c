//go:build !race

package main

// raceEnabled makes the heaviest tests use smaller inputs: the race
// detector slows the state and the decoders down about twentyfold.
const raceEnabled = false
