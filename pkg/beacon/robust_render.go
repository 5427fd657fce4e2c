package beacon

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
)

// RobustColumns are the robust profile's output columns: the seed query's
// seven key columns under its names, then the explanation.
var RobustColumns = []string{
	"DeviceId", "DeviceName", "InitiatingProcessAccountName", "InitiatingProcessAccountDomain",
	"InitiatingProcessFileName", "RemoteIP", "RemotePort", "Score", "Severity", "PeriodSeconds",
	"Callbacks", "FirstSeen", "LastSeen", "Dispersion", "Support", "CountScore", "Coverage",
	"MissedCallbacks", "MergedConnections", "Pauses", "Reasons", "GapHistogram", "Domains",
	"dcount_DeviceId", "PeriodDeviceCount",
}

// robustCells returns a robust row's values in RobustColumns order, each as
// JSON.
func (r *Row) robustCells() [][]byte {
	str := func(s string) []byte { b, _ := json.Marshal(s); return b }
	i64 := func(v int64) []byte { return strconv.AppendInt(nil, v, 10) }
	f64 := func(v float64) []byte { return appendFloat(nil, round4(v)) }
	tm := func(t Time) []byte { return str(t.String()) }
	reasons := r.Reasons
	if reasons == nil {
		reasons = []string{}
	}
	rs, _ := json.Marshal(reasons)
	domains := r.Domains
	if domains == nil {
		domains = []string{}
	}
	dom, _ := json.Marshal(domains)
	return [][]byte{
		str(r.DeviceId), str(r.DeviceName), str(r.AccountName), str(r.AccountDomain),
		str(r.FileName), str(r.RemoteIP), i64(int64(r.RemotePort)), f64(r.Score), str(r.Severity),
		f64(r.PeriodSeconds), i64(r.Callbacks), tm(r.MinTimestamp), tm(r.MaxTimestamp),
		f64(r.R.Dispersion), f64(r.R.Support), f64(r.R.CountScore), f64(r.R.Coverage),
		i64(r.R.Missed), i64(r.R.Merged), i64(r.R.Pauses), rs, str(histString(r.R.GapHistogram)), dom,
		i64(r.DeviceCount), i64(r.R.PeriodDevices),
	}
}

// round4 keeps four decimals: scores are explanations, and four digits
// keep rows short and identical across platforms' last-bit differences.
func round4(v float64) float64 {
	return float64(int64(v*1e4+0.5)) / 1e4
}

// histString renders a gap histogram as "60s×48 120s×2".
func histString(h []Bin) string {
	var b strings.Builder
	for i, x := range h {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%ds×%d", x.Delta, x.Count)
	}
	return b.String()
}

func (r *Row) columns() ([]string, [][]byte) {
	if r.R.On {
		return RobustColumns, r.robustCells()
	}
	return OutputColumns, r.cells()
}

// writeRobustTable is WriteTable for robust rows.
func writeRobustTable(w io.Writer, rows []Row) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SCORE\tSEVERITY\tPERIOD\tCALLBACKS\tDEVICE\tACCOUNT\tPROCESS\tREMOTE\tDOMAINS\tDEVICES\tFIRST\tLAST\tWHY")
	for i := range rows {
		r := &rows[i]
		acct := r.Account()
		why := ""
		if len(r.Reasons) > 0 {
			why = r.Reasons[0]
		}
		if r.R.Missed > 0 {
			why += fmt.Sprintf("; %d missed", r.R.Missed)
		}
		if r.R.Pauses > 0 {
			why += fmt.Sprintf("; %d pauses", r.R.Pauses)
		}
		fmt.Fprintf(tw, "%.2f\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%d/%d\t%s\t%s\t%s\n",
			r.Score, r.Severity, fmtSeconds(r.PeriodSeconds), r.Callbacks, r.DeviceName, acct, r.FileName,
			hostPort(r.RemoteIP, r.RemotePort), shortList(r.Domains, 2), r.R.PeriodDevices, r.DeviceCount,
			r.MinTimestamp.Go().Format("01-02 15:04"), r.MaxTimestamp.Go().Format("01-02 15:04"), why)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%d beacon(s)\n", len(rows))
	return err
}

func hostPort(ip string, port int32) string {
	if strings.Contains(ip, ":") {
		return "[" + ip + "]:" + strconv.Itoa(int(port))
	}
	return ip + ":" + strconv.Itoa(int(port))
}
