package beacon

import (
	"errors"
	"strconv"
	"time"
)

// Time is a Kusto datetime: 100 ns ticks since the Unix epoch, UTC.
// Kusto keeps 7 fractional digits; time.Time would keep 9 and invite
// comparisons that Kusto cannot make.
type Time int64

// Tick is one Kusto tick.
const (
	Tick   Time = 1
	Second Time = 10_000_000
)

// TimeOf converts a time.Time, truncating below 100 ns.
func TimeOf(t time.Time) Time {
	s := t.Unix()
	return Time(s)*Second + Time(t.Nanosecond()/100)
}

// Go returns the time as a time.Time in UTC.
func (t Time) Go() time.Time {
	s := int64(t.Seconds())
	rem := int64(t - Time(s)*Second)
	return time.Unix(s, rem*100).UTC()
}

// Seconds is floor(t / 1 s): the whole second the instant falls in.
// datetime_diff('second', b, a) = b.Seconds() - a.Seconds().
func (t Time) Seconds() int64 {
	s := int64(t / Second)
	if t%Second < 0 {
		s--
	}
	return s
}

// Add returns t+d, with d truncated to ticks.
func (t Time) Add(d time.Duration) Time { return t + Time(d/100) }

// String renders the time as Kusto does: UTC, up to 7 fractional digits with
// trailing zeros cut, and a Z.
func (t Time) String() string {
	var buf [40]byte
	return string(t.AppendKusto(buf[:0]))
}

// AppendKusto appends the Kusto rendering of t to b.
func (t Time) AppendKusto(b []byte) []byte {
	g := t.Go()
	b = g.AppendFormat(b, "2006-01-02T15:04:05")
	frac := int64(t - Time(t.Seconds())*Second)
	if frac != 0 {
		var digits [7]byte
		for i := 6; i >= 0; i-- {
			digits[i] = byte('0' + frac%10)
			frac /= 10
		}
		n := 7
		for n > 0 && digits[n-1] == '0' {
			n--
		}
		b = append(b, '.')
		b = append(b, digits[:n]...)
	}
	return append(b, 'Z')
}

// MarshalText renders the time as Kusto does.
func (t Time) MarshalText() ([]byte, error) { return t.AppendKusto(nil), nil }

// UnmarshalText parses an ISO 8601 timestamp (see ParseTime).
func (t *Time) UnmarshalText(b []byte) error {
	v, err := ParseTime(b)
	if err != nil {
		return err
	}
	*t = v
	return nil
}

// Event is one DeviceNetworkEvents row, reduced to the columns the query
// reads. Strings are never null in Kusto: a missing value is "".
type Event struct {
	Timestamp       Time
	DeviceId        string
	DeviceName      string
	ActionType      string
	RemoteIP        string
	RemoteIPType    string
	RemotePort      int32
	HasPort         bool // false when RemotePort was null: such rows never form a tuple
	RemoteUrl       string
	AccountName     string // InitiatingProcessAccountName
	AccountDomain   string // InitiatingProcessAccountDomain
	FileName        string // InitiatingProcessFileName
	TenantId        string // envelope tenantId (Streaming API), "" otherwise
	AggregatedCount int64  // AdditionalFields.uniqueEventsAggregated of *AggregatedReport rows, 0 otherwise
	SHA256          string // InitiatingProcessSHA256
	SHA1            string // InitiatingProcessSHA1
	FolderPath      string // InitiatingProcessFolderPath
	CommandLine     string // InitiatingProcessCommandLine
	ProcessId       int64  // InitiatingProcessId
	ReportId        int64  // ReportId
}

// Clone returns an event whose strings share nothing with decoder input.
func (e *Event) Clone() Event {
	c := *e
	for _, s := range []*string{&c.DeviceId, &c.DeviceName, &c.ActionType, &c.RemoteIP, &c.RemoteIPType,
		&c.RemoteUrl, &c.AccountName, &c.AccountDomain, &c.FileName, &c.TenantId, &c.SHA256, &c.SHA1,
		&c.FolderPath, &c.CommandLine} {
		*s = cloneString(*s)
	}
	return c
}

func cloneString(s string) string {
	if s == "" {
		return ""
	}
	return string(append([]byte(nil), s...))
}

// Column names of DeviceNetworkEvents that the decoders read, in the
// order the simulator and the CSV writer use.
var Columns = []string{
	"Timestamp", "DeviceId", "DeviceName", "ActionType", "RemoteIP",
	"RemotePort", "RemoteUrl", "RemoteIPType", "InitiatingProcessFileName",
	"InitiatingProcessAccountName", "InitiatingProcessAccountDomain",
}

// ParseTime parses ISO 8601 timestamps as Defender writes them:
// 2024-05-01T10:00:00Z, with 0 to 7 fractional digits (more are
// truncated to 100 ns), 'T' or ' ' between date and time, and a zone of Z,
// +hh:mm / -hh:mm, or none (read as UTC).
func ParseTime(b []byte) (Time, error) {
	if len(b) < 19 {
		return 0, errBadTime
	}
	num := func(s []byte) (int, bool) {
		n := 0
		for _, c := range s {
			if c < '0' || c > '9' {
				return 0, false
			}
			n = n*10 + int(c-'0')
		}
		return n, true
	}
	y, ok1 := num(b[0:4])
	mo, ok2 := num(b[5:7])
	d, ok3 := num(b[8:10])
	h, ok4 := num(b[11:13])
	mi, ok5 := num(b[14:16])
	s, ok6 := num(b[17:19])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) || b[4] != '-' || b[7] != '-' ||
		(b[10] != 'T' && b[10] != ' ' && b[10] != 't') || b[13] != ':' || b[16] != ':' {
		return 0, errBadTime
	}
	if mo < 1 || mo > 12 || d < 1 || d > daysIn(y, mo) || h > 23 || mi > 59 || s > 59 {
		return 0, errBadTime
	}
	rest := b[19:]
	var frac Time
	if len(rest) > 0 && rest[0] == '.' {
		i := 1
		scale := Time(1_000_000)
		for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
			if scale > 0 {
				frac += Time(rest[i]-'0') * scale
				scale /= 10
			}
			i++
		}
		if i == 1 {
			return 0, errBadTime
		}
		rest = rest[i:]
	}
	var off int
	switch {
	case len(rest) == 0:
	case len(rest) == 1 && (rest[0] == 'Z' || rest[0] == 'z'):
	case len(rest) == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':':
		oh, ok1 := num(rest[1:3])
		om, ok2 := num(rest[4:6])
		if !ok1 || !ok2 || oh > 23 || om > 59 {
			return 0, errBadTime
		}
		off = oh*3600 + om*60
		if rest[0] == '-' {
			off = -off
		}
	default:
		return 0, errBadTime
	}
	days := daysFromCivil(y, mo, d)
	secs := days*86400 + int64(h*3600+mi*60+s) - int64(off)
	return Time(secs)*Second + frac, nil
}

var errBadTime = errors.New("timestamp is not ISO 8601 (want e.g. 2024-05-01T10:00:00.1234567Z)")

func daysIn(y, m int) int {
	switch m {
	case 2:
		if y%4 == 0 && (y%100 != 0 || y%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// daysFromCivil is Howard Hinnant's algorithm: days since 1970-01-01.
func daysFromCivil(y, m, d int) int64 {
	if m <= 2 {
		y--
	}
	era := y / 400
	if y < 0 && y%400 != 0 {
		era--
	}
	yoe := y - era*400
	mp := (m + 9) % 12
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return int64(era)*146097 + int64(doe) - 719468
}

// FormatPort renders a port for keys and tables.
func FormatPort(p int32) string { return strconv.Itoa(int(p)) }
