package version

import (
	"strings"
	"testing"
)

// TestRenderings: the two places that print the build say the same
// revision, each in its own shape, and say so when nothing is known.
func TestRenderings(t *testing.T) {
	for _, c := range []struct {
		b             Build
		product, line string
	}{
		{Build{}, "unknown", "beacon (no build info)"},
		{Build{Known: true, Module: "(devel)", Go: "go1.26.0"}, "(devel)", "beacon (devel) go1.26.0"},
		{Build{Known: true, Module: "v1.2.3", Go: "go1.26.0", Revision: "0123456789ab", Time: "2026-12-01T10:00:00Z"},
			"v1.2.3+0123456789ab", "beacon v1.2.3 go1.26.0 0123456789ab 2026-12-01T10:00:00Z"},
		{Build{Known: true, Module: "(devel)", Go: "go1.26.0", Revision: "0123456789ab", Modified: true},
			"(devel)+0123456789ab", "beacon (devel) go1.26.0 0123456789ab+dirty"},
		{Build{Known: true, Module: "(devel)", Go: "go1.26.0", Revision: "abc"}, "(devel)", "beacon (devel) go1.26.0 abc"},
	} {
		if got := c.b.Product(); got != c.product {
			t.Errorf("%+v: Product %q, want %q", c.b, got, c.product)
		}
		if got := c.b.String(); got != c.line {
			t.Errorf("%+v: String %q, want %q", c.b, got, c.line)
		}
	}
	// A test binary has build info: the Go release at least.
	if b := Read(); !b.Known || !strings.HasPrefix(b.Go, "go") {
		t.Errorf("Read() = %+v", b)
	}
}
