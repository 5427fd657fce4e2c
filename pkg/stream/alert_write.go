package stream

import (
	"bufio"
	"encoding/csv"
	"io"
	"strconv"

	"github.com/linkedin/goavro/v2"

	"github.com/beaconhunt/beacon/pkg/beacon"
	"github.com/beaconhunt/beacon/schemas"
)

// The alert writers: files of alerts, for a replay's --alerts and for
// anything else that keeps alerts outside Kafka.

// WriteAlerts writes alerts to a file as the alert topic carries them in
// format f: one JSON object per line for json, ecs and ocsf; for avro an
// Avro object container file (the schema in its header, so any Avro tool
// reads it).
func WriteAlerts(w io.Writer, f AlertFormat, alerts []Alert) error {
	if f == AlertAvro {
		text, err := schemas.FS.ReadFile(alertSchemaFile)
		if err != nil {
			return err
		}
		ow, err := goavro.NewOCFWriter(goavro.OCFConfig{W: w, Schema: string(text), CompressionName: goavro.CompressionDeflateLabel})
		if err != nil {
			return err
		}
		for i := 0; i < len(alerts); i += 1000 {
			batch := make([]any, 0, min(1000, len(alerts)-i))
			for j := i; j < min(i+1000, len(alerts)); j++ {
				batch = append(batch, alertNative(&alerts[j]))
			}
			if err := ow.Append(batch); err != nil {
				return err
			}
		}
		return nil
	}
	c, err := newAlertCodec(f, -1)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(w)
	var b []byte
	for i := range alerts {
		if c == nil {
			b = alerts[i].AppendJSON(b[:0])
		} else if b, err = c.append(b[:0], &alerts[i]); err != nil {
			return err
		}
		b = append(b, '\n')
		if _, err := bw.Write(b); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// AlertCSVColumns lead the query's columns (beacon.OutputColumns) in an
// alerts CSV: what the alert adds to its row.
var AlertCSVColumns = []string{"AlertId", "StreamTime", "AlertEpoch"}

// WriteAlertsCSV writes a header of AlertCSVColumns and the query's
// columns, then a line per alert: its own columns, then its row's as
// beacon.WriteCSV writes them, so a spreadsheet of alerts lines up with
// one of hunt's rows.
func WriteAlertsCSV(w io.Writer, alerts []Alert) error {
	cw := csv.NewWriter(w)
	cols := beacon.OutputColumns
	if len(alerts) > 0 && alerts[0].Row.R.On { // robust rows have their own columns
		cols = beacon.RobustColumns
	}
	if err := cw.Write(append(append([]string(nil), AlertCSVColumns...), cols...)); err != nil {
		return err
	}
	var rec []string
	for i := range alerts {
		a := &alerts[i]
		rec = append(rec[:0], a.ID, a.StreamTime.String(), strconv.FormatInt(a.Epoch, 10))
		if err := cw.Write(a.Row.AppendCSV(rec)); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}
