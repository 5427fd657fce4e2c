package fleet

import (
	"encoding/json"
	"testing"
)

// TestMessageEncoders: every message is keyed by the DeviceId it holds;
// an envelope holds up to batch events of one device, and Flush returns
// what is held back, so that every event is in exactly one message.
func TestMessageEncoders(t *testing.T) {
	rs := records(t)
	for _, f := range []Format{JSONL, Envelope, Avro} {
		enc, err := NewMessageEncoder(f, 7, "tenant")
		if err != nil {
			t.Fatal(err)
		}
		events, messages := 0, 0
		check := func(key, value []byte) {
			messages++
			if f != Envelope {
				events++
				return
			}
			var m struct {
				Records []struct {
					TenantId   string `json:"tenantId"`
					Properties struct{ DeviceId string }
				}
			}
			if err := json.Unmarshal(value, &m); err != nil {
				t.Fatalf("envelope: %v", err)
			}
			if len(m.Records) == 0 || len(m.Records) > 7 {
				t.Errorf("envelope of %d records, batch 7", len(m.Records))
			}
			for _, r := range m.Records {
				if r.Properties.DeviceId != string(key) || r.TenantId != "tenant" {
					t.Errorf("message keyed %q holds DeviceId %q of tenant %q", key, r.Properties.DeviceId, r.TenantId)
				}
			}
			events += len(m.Records)
		}
		for i := range rs {
			out := enc.Add(&rs[i])
			if f != Envelope && (len(out) != 1 || string(out[0].Key) != rs[i].DeviceId) {
				t.Fatalf("%s: %d messages for one event, key %q", f, len(out), out[0].Key)
			}
			for _, m := range out {
				check(m.Key, m.Value)
			}
		}
		for _, m := range enc.Flush() {
			check(m.Key, m.Value)
		}
		if events != len(rs) {
			t.Errorf("%s: %d events in %d messages, encoded %d", f, events, messages, len(rs))
		}
		if f == Envelope && messages >= events {
			t.Errorf("envelope: %d messages for %d events: not batched", messages, events)
		}
	}
	if _, err := NewMessageEncoder(CSV, 1, ""); err == nil {
		t.Error("CSV messages accepted")
	}
	if _, err := NewMessageEncoder(Envelope, 0, ""); err == nil {
		t.Error("an envelope batch of 0 accepted")
	}
}
