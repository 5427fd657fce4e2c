package mde

import (
	"bytes"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/iotest"
	"unicode/utf16"
	"unicode/utf8"
)

// TestSpansLines is the rule that picks the line reader (parallel) or
// the value reader (one goroutine) from the start of the input.
func TestSpansLines(t *testing.T) {
	long := `{"Skipped":"` + strings.Repeat("x", headMax) + `"}`
	// pad is a JSON line of n bytes, its newline included.
	pad := func(n int) string { return `{"s":"` + strings.Repeat("x", n-9) + "\"}\n" }
	pretty := "{\n  \"a\": 1\n}\n"
	for _, c := range []struct {
		name, in string
		want     bool
	}{
		{"JSON lines", "{\"a\":1}\n{\"a\":2}\r\n\n{\"a\":3}\n", false},
		{"one value, no line end", `{"a":1}`, false},
		{"pretty", "{\n  \"a\": 1\n}\n", true},
		{"array on its own line", "[\n{\"a\":1},\n{\"a\":2}\n]\n", true},
		{"array, rows many a line", "[{\"a\":1},{\"a\":2},\n{\"a\":3}]\n", true},
		{"compact, then pretty", "{\"a\":1}\n{\"a\":2}\n{\n  \"a\": 3\n}\n", true},
		{"two values on a line (the line reader reads both)", "{\"a\":1}\n{\"a\":2} {\"a\":3}\n", false},
		{"a cut line among lines", "{\"a\":1}\n{\"a\":\n{\"a\":3}\n", false},
		{"a broken line among lines", "{\"a\":1}\n{\"a\" 2}\n{\n  \"a\": 3\n}\n", false},
		{"a cut first line", "{\"a\":\n{\"a\":3}\n", true},
		{"text", "hello\n{\n", false},
		{"CSV", "Timestamp,DeviceId\n", false},
		{"first line longer than headMax", long + "\n{\"a\":1}\n", false},
		{"first line longer than headMax, then pretty", long + "\n{\n  \"a\": 1\n}\n", false},
		{"a pretty value starting at headMax-1 is judged", pad(headMax-1) + pretty, true},
		{"one starting at headMax is not", pad(headMax) + pretty, false},
	} {
		if got := spansLines([]byte(c.in)); got != c.want {
			t.Errorf("%s: spansLines = %v, want %v", c.name, got, c.want)
		}
	}
}

// TestUTF16Reader holds utf16Reader to unicode/utf16 and unicode/utf8 on
// random text (surrogate pairs, unpaired surrogates and a cut last unit
// included), both byte orders, read a byte at a time and in halves.
func TestUTF16Reader(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := range 200 {
		var units []uint16
		for range r.IntN(40000) {
			switch r.IntN(10) {
			case 0:
				units = append(units, utf16.Encode([]rune{rune(0x10000 + r.IntN(0xfffff))})...)
			case 1:
				units = append(units, uint16(0xd800+r.IntN(0x800))) // a surrogate, alone
			default:
				units = append(units, uint16(r.IntN(0xd800)))
			}
		}
		want := string(utf16.Decode(units))
		for _, big := range []bool{false, true} {
			var b []byte
			for _, u := range units {
				if big {
					b = binary.BigEndian.AppendUint16(b, u)
				} else {
					b = binary.LittleEndian.AppendUint16(b, u)
				}
			}
			cut := n%7 == 0 && len(b) > 0
			if cut {
				b = append(b, 0x41) // half a unit
			}
			for _, wrap := range []func(io.Reader) io.Reader{iotest.OneByteReader, iotest.HalfReader} {
				got, err := io.ReadAll(&utf16Reader{r: wrap(bytes.NewReader(b)), big: big})
				w := want
				if cut {
					w += string(utf8.RuneError)
				}
				if err != nil || string(got) != w {
					t.Fatalf("text %d (big-endian %v, cut %v): %v; %d bytes, want %d", n, big, cut, err, len(got), len(w))
				}
			}
		}
	}
}
