package beacon

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
)

// OutputColumns are the query's output columns, in its order.
var OutputColumns = []string{
	"DeviceId", "DeviceName", "InitiatingProcessAccountName", "InitiatingProcessAccountDomain",
	"InitiatingProcessFileName", "RemoteIP", "RemotePort", "count_", "min_Timestamp",
	"max_Timestamp", "Duration", "percentile_TimeDeltaInSeconds_5", "percentile_TimeDeltaInSeconds_25",
	"percentile_TimeDeltaInSeconds_50", "percentile_TimeDeltaInSeconds_75",
	"percentile_TimeDeltaInSeconds_95", "TimeDeltaList", "TimeDeltaInSeconds_min",
	"TimeDeltaInSeconds_min_index", "TimeDeltaInSeconds_max", "TimeDeltaInSeconds_max_index",
	"TimeDeltaInSeconds_avg", "TimeDeltaInSeconds_stdev", "TimeDeltaInSeconds_variance", "Jitter",
	"BeaconSleepMin", "BeaconSleepMax", "Domains", "dcount_DeviceId", "Timestamp",
}

// cells returns the row's values in OutputColumns order, each as JSON.
func (r *Row) cells() [][]byte {
	str := func(s string) []byte { b, _ := json.Marshal(s); return b }
	i64 := func(v int64) []byte { return strconv.AppendInt(nil, v, 10) }
	f64 := func(v float64) []byte { return appendFloat(nil, v) }
	tm := func(t Time) []byte { return str(t.String()) }
	deltas := []byte{'['}
	for i, d := range r.TimeDeltaList {
		if i > 0 {
			deltas = append(deltas, ',')
		}
		deltas = strconv.AppendInt(deltas, d, 10)
	}
	deltas = append(deltas, ']')
	domains := r.Domains
	if domains == nil {
		domains = []string{}
	}
	dom, _ := json.Marshal(domains)
	p := r.Percentiles
	return [][]byte{
		str(r.DeviceId), str(r.DeviceName), str(r.AccountName), str(r.AccountDomain),
		str(r.FileName), str(r.RemoteIP), i64(int64(r.RemotePort)), i64(r.Count), tm(r.MinTimestamp),
		tm(r.MaxTimestamp), i64(r.Duration), i64(p[0]), i64(p[1]), i64(p[2]), i64(p[3]), i64(p[4]),
		deltas, i64(r.Min), i64(int64(r.MinIndex)), i64(r.Max), i64(int64(r.MaxIndex)),
		f64(r.Avg), f64(r.Stdev), f64(r.Variance), f64(r.Jitter),
		f64(r.SleepMin()), f64(r.SleepMax()), dom, i64(r.DeviceCount), tm(r.MinTimestamp),
	}
}

// appendFloat writes the shortest representation that reads back to the
// same float64; non-finite values (which valid rows never have) as null.
func appendFloat(b []byte, v float64) []byte {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return append(b, "null"...)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

// AppendJSON appends the row as one JSON object with the query's column
// names in its order.
func (r *Row) AppendJSON(b []byte) []byte {
	b = append(b, '{')
	names, cells := r.columns()
	for i, c := range cells {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendQuote(b, names[i]) // names are ASCII
		b = append(b, ':')
		b = append(b, c...)
	}
	return append(b, '}')
}

// WriteJSONL writes one JSON object per row.
func WriteJSONL(w io.Writer, rows []Row) error {
	bw := bufio.NewWriter(w)
	var b []byte
	for i := range rows {
		b = rows[i].AppendJSON(b[:0])
		b = append(b, '\n')
		if _, err := bw.Write(b); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// WriteCSV writes a header of the query's column names and one record per
// row; arrays are JSON, timestamps as Kusto renders them.
func WriteCSV(w io.Writer, rows []Row) error {
	cw := csv.NewWriter(w)
	header := OutputColumns
	if len(rows) > 0 && rows[0].R.On {
		header = RobustColumns
	}
	if err := cw.Write(header); err != nil {
		return err
	}
	rec := make([]string, 0, len(OutputColumns))
	for i := range rows {
		rec = rows[i].AppendCSV(rec[:0])
		if err := cw.Write(rec); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// AppendCSV appends the row's fields in OutputColumns order as WriteCSV
// writes them: strings as they are, arrays as JSON, timestamps as Kusto
// renders them.
func (r *Row) AppendCSV(rec []string) []string {
	_, cells := r.columns()
	for _, c := range cells {
		if len(c) > 0 && c[0] == '"' {
			var s string
			_ = json.Unmarshal(c, &s)
			rec = append(rec, s)
		} else {
			rec = append(rec, string(c))
		}
	}
	return rec
}

// WriteTable writes a summary for people: one line per beacon, in output
// order, with the columns an analyst triages on.
func WriteTable(w io.Writer, rows []Row) error {
	if len(rows) > 0 && rows[0].R.On {
		return writeRobustTable(w, rows)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "JITTER%\tSLEEP(s)\tCOUNT\tDEVICE\tACCOUNT\tPROCESS\tREMOTE\tDOMAINS\tDEVICES\tFIRST\tLAST")
	for i := range rows {
		r := &rows[i]
		acct := r.Account()
		fmt.Fprintf(tw, "%.2f\t%.1f±%.1f\t%d\t%s\t%s\t%s\t%s:%d\t%s\t%d\t%s\t%s\n",
			r.Jitter, r.Avg, r.Stdev, r.Count, r.DeviceName, acct, r.FileName, r.RemoteIP, r.RemotePort,
			shortList(r.Domains, 2), r.DeviceCount, r.MinTimestamp, r.MaxTimestamp)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%d beacon(s)\n", len(rows))
	return err
}

func shortList(s []string, n int) string {
	var parts []string
	for i, v := range s {
		if i == n {
			parts = append(parts, fmt.Sprintf("+%d", len(s)-n))
			break
		}
		if v == "" {
			v = `""`
		}
		parts = append(parts, v)
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ",")
}
