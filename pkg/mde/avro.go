package mde

import (
	"bufio"
	"context"
	"errors"
	"fmt"

	"github.com/linkedin/goavro/v2"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// readAvro reads an Avro object container file: Event Hubs Capture (each
// record's Body holds a message, decoded as any JSON shape), or rows of
// schemas/DeviceNetworkEvent.avsc as beacon simulate writes them. Each
// record counts as a line. A truncated or corrupt file is an error.
func readAvro(ctx context.Context, br *bufio.Reader, source string, opt Options, counted *countingReader, fn func([]beacon.Event)) (Stats, error) {
	st := Stats{Shape: ShapeAvro}
	ocf, err := goavro.NewOCFReader(br)
	if err != nil {
		return st, fmt.Errorf("%s: Avro container: %w", source, err)
	}
	batch := make([]beacon.Event, 0, 4096)
	d := decoder{queryOnly: opt.QueryOnly}
	flush := func() {
		if len(batch) > 0 {
			st.Events += int64(len(batch))
			fn(batch)
			batch = batch[:0]
		}
		if opt.OnProgress != nil {
			opt.OnProgress(counted.n)
		}
	}
	for ocf.Scan() && ctx.Err() == nil {
		datum, err := ocf.Read()
		if err != nil {
			return st, fmt.Errorf("%s: Avro record %d: %w", source, st.Lines+1, err)
		}
		st.Lines++
		m, _ := datum.(map[string]any)
		before := len(batch)
		if body, ok := m["Body"]; ok {
			b, _ := body.([]byte)
			if b == nil {
				if u, ok := body.(map[string]any); ok { // ["null","bytes"]
					b, _ = u["bytes"].([]byte)
				}
			}
			batch, err = d.message(b, batch)
			if err == nil && len(batch) == before && len(b) == 0 {
				err = errors.New("empty Body")
			}
		} else {
			var ev beacon.Event
			if err = FromAvro(m, &ev); err == nil {
				batch = append(batch, ev)
			}
		}
		if err != nil {
			st.Bad++
			if opt.OnBad != nil {
				opt.OnBad(BadLine{source, st.Lines, fmt.Errorf("Avro record: %w", err)})
			}
		}
		if len(batch) >= cap(batch)/2 {
			flush()
		}
	}
	if err := ocf.Err(); err != nil {
		return st, fmt.Errorf("%s: Avro container after record %d: %w", source, st.Lines, err)
	}
	flush()
	st.Other = int64(d.other)
	return st, nil
}

// FromAvro fills ev from a goavro native record of
// schemas/DeviceNetworkEvent.avsc (nullable columns are unions).
func FromAvro(m map[string]any, ev *beacon.Event) error {
	if m == nil {
		return errors.New("not a record")
	}
	ts := avroString(m["Timestamp"])
	t, err := beacon.ParseTime([]byte(ts))
	if err != nil {
		return fmt.Errorf("Timestamp %q: %w", ts, err)
	}
	ev.Timestamp = t
	ev.DeviceId = avroString(m["DeviceId"])
	ev.DeviceName = avroString(m["DeviceName"])
	ev.ActionType = avroString(m["ActionType"])
	ev.RemoteIP = avroString(m["RemoteIP"])
	ev.RemoteIPType = avroString(m["RemoteIPType"])
	ev.RemoteUrl = avroString(m["RemoteUrl"])
	ev.AccountName = avroString(m["InitiatingProcessAccountName"])
	ev.AccountDomain = avroString(m["InitiatingProcessAccountDomain"])
	ev.FileName = avroString(m["InitiatingProcessFileName"])
	if p, ok := avroInt(m["RemotePort"]); ok {
		ev.RemotePort, ev.HasPort = int32(p), true
	}
	ev.ProcessId, _ = avroInt(m["InitiatingProcessId"])
	return nil
}

// avroString reads a ["null","string"] union: null is "", as in Kusto.
func avroString(v any) string {
	switch u := v.(type) {
	case map[string]any:
		s, _ := u["string"].(string)
		return s
	case string:
		return u
	}
	return ""
}

func avroInt(v any) (int64, bool) {
	if u, ok := v.(map[string]any); ok {
		for _, x := range u {
			v = x
		}
	}
	switch n := v.(type) {
	case int32:
		return int64(n), true
	case int64:
		return n, true
	}
	return 0, false
}
