package beacon

import (
	"encoding/json"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
)

// kustoVectors are Kusto's own outputs for the functions the query relies
// on (../shared/testvectors/kusto.json, copied to testdata/ so the module
// tests stand alone).
type kustoVectors struct {
	SeriesOutliers []struct {
		Note     string    `json:"note"`
		Input    []float64 `json:"input"`
		P10, P90 float64
		Output   []float64 `json:"output"`
	} `json:"series_outliers"`
	SeriesStats []struct {
		Note     string    `json:"note"`
		Input    []float64 `json:"input"`
		Min      *float64  `json:"min"`
		MinIdx   *int      `json:"min_idx"`
		Max      *float64  `json:"max"`
		MaxIdx   *int      `json:"max_idx"`
		Avg      *float64  `json:"avg"`
		Stdev    *float64  `json:"stdev"`
		Variance *float64  `json:"variance"`
		Sum      *float64  `json:"sum"`
		Len      *int      `json:"len"`
	} `json:"series_stats"`
	Percentiles []struct {
		Note     string    `json:"note"`
		Input    []int64   `json:"input"`
		Percents []float64 `json:"percents"`
		Output   []int64   `json:"output"`
	} `json:"percentiles_nearest_rank"`
	DatetimeDiff []struct {
		Note   string `json:"note"`
		A, B   string
		Output int64 `json:"output"`
	} `json:"datetime_diff_second"`
	IPv4IsPrivate []struct {
		Input  string `json:"input"`
		Output *bool  `json:"output"`
	} `json:"ipv4_is_private"`
}

func loadVectors(t *testing.T) kustoVectors {
	t.Helper()
	b, err := os.ReadFile("testdata/kusto.json")
	if err != nil {
		t.Fatal(err)
	}
	var v kustoVectors
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.SeriesOutliers) == 0 || len(v.SeriesStats) == 0 || len(v.Percentiles) == 0 ||
		len(v.DatetimeDiff) == 0 || len(v.IPv4IsPrivate) == 0 {
		t.Fatal("kusto.json is missing a section")
	}
	return v
}

func sameBits(a, b float64) bool { return math.Float64bits(a) == math.Float64bits(b) }

// samePrinted accepts a vector value that Kusto printed with fewer digits
// than a float64 holds (the stdev() answer shows 15): got must print the
// same at that precision.
func samePrinted(got, want float64) bool {
	w := strconv.FormatFloat(want, 'g', -1, 64)
	digits := 0
	for _, c := range strings.TrimLeft(strings.Split(w, "e")[0], "-0.") {
		if c >= '0' && c <= '9' {
			digits++
		}
	}
	return digits >= 15 && digits < 17 && strconv.FormatFloat(got, 'g', digits, 64) == w
}

func TestKustoSeriesOutliers(t *testing.T) {
	for _, c := range loadVectors(t).SeriesOutliers {
		got := SeriesOutliers(c.Input)
		for i := range c.Output {
			if !sameBits(got[i], c.Output[i]) {
				t.Errorf("%s: score[%d] of %v = %v, Kusto %v", c.Note, i, c.Input[i], got[i], c.Output[i])
			}
		}
		sorted := append([]float64(nil), c.Input...)
		sortFloats(sorted)
		if p := interpolatedSorted(sorted, 10); !sameBits(p, c.P10) {
			t.Errorf("p10 = %v, Kusto %v", p, c.P10)
		}
		if p := interpolatedSorted(sorted, 90); !sameBits(p, c.P90) {
			t.Errorf("p90 = %v, Kusto %v", p, c.P90)
		}
	}
}

func TestKustoSeriesStats(t *testing.T) {
	p := Seed()
	for _, c := range loadVectors(t).SeriesStats {
		deltas := make([]int64, len(c.Input))
		for i, x := range c.Input {
			deltas[i] = int64(x)
			if float64(deltas[i]) != x {
				t.Fatalf("vector %v is not integral; deltas are whole seconds", c.Input)
			}
		}
		st, minI, maxI := p.SeriesStats(deltas)
		check := func(name string, got float64, want *float64) {
			if want != nil && !sameBits(got, *want) && !samePrinted(got, *want) {
				t.Errorf("%s%s = %v, Kusto %v", c.Note, name, got, *want)
			}
		}
		check("min", float64(st.Min), c.Min)
		check("max", float64(st.Max), c.Max)
		check("avg", st.Avg, c.Avg)
		check("stdev", st.Stdev, c.Stdev)
		check("variance", st.Variance, c.Variance)
		s := SummaryOf(deltas)
		check("sum", float64(s.Sum), c.Sum)
		if c.MinIdx != nil && minI != *c.MinIdx {
			t.Errorf("min_idx = %d, Kusto %d", minI, *c.MinIdx)
		}
		if c.MaxIdx != nil && maxI != *c.MaxIdx {
			t.Errorf("max_idx = %d, Kusto %d", maxI, *c.MaxIdx)
		}
		if c.Len != nil && int(st.Count) != *c.Len {
			t.Errorf("len = %d, Kusto %d", st.Count, *c.Len)
		}
	}
}

func TestKustoPercentilesNearestRank(t *testing.T) {
	for _, c := range loadVectors(t).Percentiles {
		s := SummaryOf(c.Input)
		for i, pc := range c.Percents {
			if got := s.NearestRank(pc); got != c.Output[i] {
				t.Errorf("%s: P%v = %d, Kusto %d", c.Note, pc, got, c.Output[i])
			}
		}
	}
}

func TestKustoDatetimeDiff(t *testing.T) {
	for _, c := range loadVectors(t).DatetimeDiff {
		a, err := ParseTime([]byte(c.A))
		if err != nil {
			t.Fatal(err)
		}
		b, err := ParseTime([]byte(c.B))
		if err != nil {
			t.Fatal(err)
		}
		if got := DatetimeDiffSeconds(a, b); got != c.Output {
			t.Errorf("%s: datetime_diff('second', %s, %s) = %d, Kusto %d", c.Note, c.A, c.B, got, c.Output)
		}
	}
}

func TestKustoIPv4IsPrivate(t *testing.T) {
	for _, c := range loadVectors(t).IPv4IsPrivate {
		priv, ok := IPv4IsPrivate(c.Input)
		switch {
		case c.Output == nil && ok:
			t.Errorf("ipv4_is_private(%q) = %v, Kusto null", c.Input, priv)
		case c.Output != nil && (!ok || priv != *c.Output):
			t.Errorf("ipv4_is_private(%q) = %v (ok=%v), Kusto %v", c.Input, priv, ok, *c.Output)
		}
	}
}

func sortFloats(x []float64) {
	for i := 1; i < len(x); i++ {
		for j := i; j > 0 && x[j] < x[j-1]; j-- {
			x[j], x[j-1] = x[j-1], x[j]
		}
	}
}
