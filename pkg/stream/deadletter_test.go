package stream

import (
	"context"
	"encoding/binary"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/linkedin/goavro/v2"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/beaconhunt/beacon/pkg/fleet"
)

// TestDeadLetters: malformed, truncated, wrong-schema, empty and oversized
// records go to the dead-letter topic with the reason and their origin in
// headers; the valid records around them, in every input format (flat
// JSON, envelopes, raw Avro, Confluent-framed Avro), are all detected on:
// /beacons is still exactly the batch query over the valid events.
func TestDeadLetters(t *testing.T) {
	const parts = 3
	_, addr := newCluster(t, parts)
	rs, _ := records(t, testFleet(3))
	enc, err := fleet.NewAvroEncoder()
	if err != nil {
		t.Fatal(err)
	}
	other, err := goavro.NewCodec(`{"type":"record","name":"Other","fields":[{"name":"a","type":"long"},{"name":"b","type":"string"}]}`)
	if err != nil {
		t.Fatal(err)
	}
	const schemaID = 7
	confluent := func(id uint32, body []byte) []byte {
		b := binary.BigEndian.AppendUint32([]byte{0}, id)
		return append(b, body...)
	}
	avroOf := func(r *fleet.Record) []byte {
		b, err := enc.Append(nil, r)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	wrong, _ := other.BinaryFromNative(nil, map[string]any{"a": int64(5), "b": "hello, world"})
	bad := []struct {
		value  []byte
		reason string
	}{
		{[]byte(`{"Timestamp":"2024-05-01T00:00:00Z","DeviceId":`), reasonJSON},        // truncated JSON
		{[]byte(`{"DeviceId":"x","RemoteIP":"1.2.3.4"}`), reasonJSON},                  // no Timestamp
		{[]byte(`{"records":[{"properties":{"Timestamp":"yesterday"}}]}`), reasonJSON}, // bad time in an envelope
		{avroOf(&rs[0])[:20], reasonAvro},                                              // truncated Avro
		{wrong, reasonAvro},                                                            // another schema: does not decode as ours
		{confluent(9, avroOf(&rs[1])), reasonSchema},                                   // another schema id
		{confluent(schemaID, avroOf(&rs[2])[:10]), reasonAvro},                         // truncated, framed
		{[]byte{}, reasonEmpty},                                                        // empty
		{[]byte("{" + strings.Repeat(" ", 100<<10) + "}"), reasonOversized},            // over MaxRecordBytes
		{append([]byte(`{"records":[]}`), ' '), reasonEmpty},                           // an envelope of nothing
	}

	// Valid records in four encodings, with the bad ones spread among them.
	cl := newClient(t, addr, kgo.RecordPartitioner(kgo.RoundRobinPartitioner()), kgo.ProducerBatchMaxBytes(256<<10))
	var recs []*kgo.Record
	badAt := make(map[int]int)
	for i := range bad {
		badAt[(i+1)*len(rs)/(len(bad)+1)] = i
	}
	for i := range rs {
		if j, ok := badAt[i]; ok {
			recs = append(recs, &kgo.Record{Topic: tInput, Value: bad[j].value, Headers: []kgo.RecordHeader{{Key: "bad", Value: []byte(strconv.Itoa(j))}}})
		}
		var v []byte
		switch i % 3 {
		case 0:
			v = fleet.AppendJSON(nil, &rs[i])
		case 1:
			v = avroOf(&rs[i])
		case 2:
			v = confluent(schemaID, avroOf(&rs[i]))
		}
		recs = append(recs, &kgo.Record{Topic: tInput, Value: v})
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	p := testParams()
	s := service(t, addr, t.TempDir(), testLogger(t), Params(p), MaxRecordBytes(64<<10), InputSchemaID(schemaID))
	stop := start(t, s)
	waitDrained(t, addr, 90*time.Second)
	want := jsonl(huntByPartition(p, rs, parts))
	if got := getBeacons(t, s, ""); got != want {
		t.Errorf("/beacons differs from hunt over the valid events:\n%s", diffLines(got, want))
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// Every bad record is on the dead-letter topic, once, with its reason
	// and where it came from.
	adm := kadm.NewClient(newClient(t, addr))
	if n := endOffsets(t, adm, tDead)[0]; n != int64(len(bad)) {
		t.Fatalf("%d records on the dead-letter topic, want %d", n, len(bad))
	}
	dl := newClient(t, addr, kgo.ConsumeTopics(tDead), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	seen := make(map[int]bool)
	for len(seen) < len(bad) && ctx.Err() == nil {
		dl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			h := make(map[string]string)
			for _, kv := range r.Headers {
				h[kv.Key] = string(kv.Value)
			}
			j, err := strconv.Atoi(h["bad"])
			if err != nil {
				t.Errorf("dead letter without the original headers: %v", h)
				return
			}
			seen[j] = true
			if h["beacon.reason"] != bad[j].reason {
				t.Errorf("bad record %d: reason %q (%s), want %q", j, h["beacon.reason"], h["beacon.error"], bad[j].reason)
			}
			if h["beacon.topic"] != tInput || h["beacon.partition"] == "" || h["beacon.offset"] == "" || h["beacon.error"] == "" {
				t.Errorf("bad record %d: origin headers %v", j, h)
			}
			// The origin headers point at the original record.
			p, _ := strconv.Atoi(h["beacon.partition"])
			o, _ := strconv.ParseInt(h["beacon.offset"], 10, 64)
			orig := readAt(t, addr, tInput, int32(p), o)
			if orig == nil || len(orig.Headers) == 0 || string(orig.Headers[0].Value) != h["bad"] {
				t.Errorf("bad record %d: headers point at %s/%d/%d, which is another record", j, tInput, p, o)
			}
			if bad[j].reason == reasonOversized {
				if h["beacon.truncated"] != strconv.Itoa(len(bad[j].value)) || len(r.Value) != 64<<10 {
					t.Errorf("oversized record: truncated header %q, value of %d bytes", h["beacon.truncated"], len(r.Value))
				}
			} else if string(r.Value) != string(bad[j].value) {
				t.Errorf("bad record %d: value not kept", j)
			}
		})
	}
	if len(seen) != len(bad) {
		t.Errorf("read %d distinct dead letters, want %d", len(seen), len(bad))
	}
}

// readAt reads the record at topic/partition/offset.
func readAt(t *testing.T, addr, topic string, p int32, o int64) *kgo.Record {
	cl := newClient(t, addr, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {p: kgo.NewOffset().At(o)}}))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		var got *kgo.Record
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			if got == nil && r.Offset == o {
				got = r
			}
		})
		if got != nil {
			return got
		}
	}
	return nil
}
