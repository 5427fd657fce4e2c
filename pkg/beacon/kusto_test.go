package beacon

import (
	"encoding/json"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
)

// kustoVectors are the test vectors for the functions the query relies on
// (the brief's testvectors/kusto.json, copied to testdata/ so the module
// tests stand alone). Most are what Kusto returned (its documentation, a
// Kusto engineer's public answer); a case marked "contract": true is this
// project's reading where the documentation shows no example. Failure
// messages say which: "Kusto" only for Kusto's own answers.
type kustoVectors struct {
	SeriesOutliers []struct {
		Note     string    `json:"note"`
		Contract bool      `json:"contract"`
		Input    []float64 `json:"input"`
		P10, P90 float64
		Output   []float64 `json:"output"`
	} `json:"series_outliers"`
	SeriesStats []struct {
		Note     string    `json:"note"`
		Contract bool      `json:"contract"`
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
		Contract bool      `json:"contract"`
		Input    []int64   `json:"input"`
		Percents []float64 `json:"percents"`
		Output   []int64   `json:"output"`
	} `json:"percentiles_nearest_rank"`
	DatetimeDiff []struct {
		Note     string `json:"note"`
		Contract bool   `json:"contract"`
		A, B     string
		Output   int64 `json:"output"`
	} `json:"datetime_diff_second"`
	IPv4IsPrivate []struct {
		Input    string `json:"input"`
		Contract bool   `json:"contract"`
		Output   *bool  `json:"output"`
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

// source names where a vector's answer comes from, for failure messages.
func source(contract bool) string {
	if contract {
		return "contract"
	}
	return "Kusto"
}

// TestVectorsLabelled: the file says which cases are the project's own
// reading, and there are both kinds (a file where every case claims to be
// Kusto's, or none does, has lost its labels).
func TestVectorsLabelled(t *testing.T) {
	v := loadVectors(t)
	var kusto, contract int
	count := func(c bool) {
		if c {
			contract++
		} else {
			kusto++
		}
	}
	for _, c := range v.SeriesOutliers {
		count(c.Contract)
	}
	for _, c := range v.SeriesStats {
		count(c.Contract)
	}
	for _, c := range v.Percentiles {
		count(c.Contract)
	}
	for _, c := range v.DatetimeDiff {
		count(c.Contract)
	}
	for _, c := range v.IPv4IsPrivate {
		count(c.Contract)
	}
	if kusto == 0 || contract == 0 {
		t.Fatalf("%d Kusto cases and %d contract cases; the labels are lost", kusto, contract)
	}
	t.Logf("%d cases from Kusto, %d contract cases", kusto, contract)
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
				t.Errorf("%s: score[%d] of %v = %v, %s %v", c.Note, i, c.Input[i], got[i], source(c.Contract), c.Output[i])
			}
		}
		sorted := append([]float64(nil), c.Input...)
		sortFloats(sorted)
		if p := interpolatedSorted(sorted, 10); !sameBits(p, c.P10) {
			t.Errorf("p10 = %v, %s %v", p, source(c.Contract), c.P10)
		}
		if p := interpolatedSorted(sorted, 90); !sameBits(p, c.P90) {
			t.Errorf("p90 = %v, %s %v", p, source(c.Contract), c.P90)
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
				t.Errorf("%s%s = %v, %s %v", c.Note, name, got, source(c.Contract), *want)
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
			t.Errorf("min_idx = %d, %s %d", minI, source(c.Contract), *c.MinIdx)
		}
		if c.MaxIdx != nil && maxI != *c.MaxIdx {
			t.Errorf("max_idx = %d, %s %d", maxI, source(c.Contract), *c.MaxIdx)
		}
		if c.Len != nil && int(st.Count) != *c.Len {
			t.Errorf("len = %d, %s %d", st.Count, source(c.Contract), *c.Len)
		}
	}
}

func TestKustoPercentilesNearestRank(t *testing.T) {
	for _, c := range loadVectors(t).Percentiles {
		s := SummaryOf(c.Input)
		for i, pc := range c.Percents {
			if got := s.NearestRank(pc); got != c.Output[i] {
				t.Errorf("%s: P%v = %d, %s %d", c.Note, pc, got, source(c.Contract), c.Output[i])
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
			t.Errorf("%s: datetime_diff('second', %s, %s) = %d, %s %d", c.Note, c.A, c.B, got, source(c.Contract), c.Output)
		}
	}
}

func TestKustoIPv4IsPrivate(t *testing.T) {
	for _, c := range loadVectors(t).IPv4IsPrivate {
		priv, ok := IPv4IsPrivate(c.Input)
		switch {
		case c.Output == nil && ok:
			t.Errorf("ipv4_is_private(%q) = %v, %s null", c.Input, priv, source(c.Contract))
		case c.Output != nil && (!ok || priv != *c.Output):
			t.Errorf("ipv4_is_private(%q) = %v (ok=%v), %s %v", c.Input, priv, ok, source(c.Contract), *c.Output)
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
