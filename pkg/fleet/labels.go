package fleet

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// labelJSON is a label's line in a labels file (docs/simulate.md).
type labelJSON struct {
	Class         string      `json:"class"`
	Name          string      `json:"name"`
	Framework     string      `json:"framework"`
	Trait         string      `json:"trait,omitempty"`
	SleepS        float64     `json:"sleep_s"`
	Jitter        float64     `json:"jitter"`
	GapMinS       float64     `json:"gap_min_s"`
	GapMaxS       float64     `json:"gap_max_s"`
	FirstEvent    beacon.Time `json:"first_event"`
	WorkHoursOnly bool        `json:"work_hours_only"`
	DeviceId      string      `json:"DeviceId"`
	DeviceName    string      `json:"DeviceName"`
	AccountName   string      `json:"InitiatingProcessAccountName"`
	AccountDomain string      `json:"InitiatingProcessAccountDomain"`
	FileName      string      `json:"InitiatingProcessFileName"`
	RemoteIP      string      `json:"RemoteIP"`
	RemotePort    int32       `json:"RemotePort"`
	RemoteUrl     string      `json:"RemoteUrl"`
	Callbacks     int64       `json:"callbacks"`
	Events        int64       `json:"events"`
}

func seconds(d time.Duration) float64 { return d.Seconds() }

func fromSeconds(s float64) time.Duration { return time.Duration(s*1e7+0.5) * 100 }

// MarshalJSON renders the label as its line in a labels file.
func (l Label) MarshalJSON() ([]byte, error) {
	return json.Marshal(labelJSON{
		Class: l.Class, Name: l.Name, Framework: l.Framework, Trait: l.Trait,
		SleepS: seconds(l.Sleep), Jitter: l.Jitter,
		GapMinS: seconds(l.GapMin), GapMaxS: seconds(l.GapMax),
		FirstEvent: l.FirstEvent, WorkHoursOnly: l.WorkHoursOnly,
		DeviceId: l.DeviceId, DeviceName: l.DeviceName, AccountName: l.AccountName,
		AccountDomain: l.AccountDomain, FileName: l.FileName, RemoteIP: l.RemoteIP,
		RemotePort: l.RemotePort, RemoteUrl: l.RemoteUrl,
		Callbacks: l.Callbacks, Events: l.Events,
	})
}

// UnmarshalJSON reads a label's line.
func (l *Label) UnmarshalJSON(b []byte) error {
	var j labelJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*l = Label{
		Tuple: Tuple{DeviceId: j.DeviceId, DeviceName: j.DeviceName, AccountName: j.AccountName,
			AccountDomain: j.AccountDomain, FileName: j.FileName, RemoteIP: j.RemoteIP, RemotePort: j.RemotePort},
		Class:     j.Class,
		Name:      j.Name,
		Framework: j.Framework,
		Trait:     j.Trait,
		Sleep:     fromSeconds(j.SleepS), Jitter: j.Jitter,
		GapMin: fromSeconds(j.GapMinS), GapMax: fromSeconds(j.GapMaxS),
		RemoteUrl: j.RemoteUrl, FirstEvent: j.FirstEvent, WorkHoursOnly: j.WorkHoursOnly,
		Callbacks: j.Callbacks, Events: j.Events,
	}
	return nil
}

// WriteLabels writes one JSON object per line per label.
func WriteLabels(w io.Writer, labels []Label) error {
	bw := bufio.NewWriter(w)
	for _, l := range labels {
		b, err := l.MarshalJSON()
		if err != nil {
			return err
		}
		bw.Write(b)
		bw.WriteByte('\n')
	}
	return bw.Flush()
}

// ReadLabels reads a labels file.
func ReadLabels(r io.Reader) ([]Label, error) {
	var out []Label
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var l Label
		if err := l.UnmarshalJSON(sc.Bytes()); err != nil {
			return nil, fmt.Errorf("labels line %d: %w", n, err)
		}
		out = append(out, l)
	}
	return out, sc.Err()
}
