package fleet

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// MessageEncoder turns records into Kafka messages keyed by DeviceId, as
// Defender's exports key them. Add returns the messages that are complete
// (they are reused by the next call); Flush returns the rest.
type MessageEncoder interface {
	Add(r *Record) []*kgo.Record
	Flush() []*kgo.Record
}

// NewMessageEncoder returns the encoder of a message format: JSONL (one
// flat JSON object per event), Avro (raw Avro binary per event,
// schemas/DeviceNetworkEvent.avsc, no registry header) or Envelope (a
// Streaming API message of up to batch events of one device, tenantId
// tenant). CSV is a file format only.
func NewMessageEncoder(f Format, batch int, tenant string) (MessageEncoder, error) {
	switch f {
	case JSONL:
		return &perEvent{encode: AppendJSON}, nil
	case Avro:
		if _, err := NewAvroEncoder(); err != nil { // checks the schema
			return nil, err
		}
		return &perEvent{encode: AppendAvro}, nil
	case Envelope:
		if batch < 1 {
			return nil, fmt.Errorf("envelope batch must be at least 1, got %d", batch)
		}
		return &envelopes{batch: batch, tenant: tenant, pending: map[string]*deviceBatch{}}, nil
	}
	return nil, fmt.Errorf("no message encoding for format %q (want jsonl, envelope or avro)", f)
}

// keyCache shares one key slice per device; kgo only reads keys.
type keyCache map[string][]byte

func (k keyCache) key(id string) []byte {
	b, ok := k[id]
	if !ok {
		b = []byte(id)
		k[id] = b
	}
	return b
}

// perEvent is a message per event.
type perEvent struct {
	encode func([]byte, *Record) []byte
	keys   keyCache
	out    [1]*kgo.Record
}

func (p *perEvent) Add(r *Record) []*kgo.Record {
	if p.keys == nil {
		p.keys = keyCache{}
	}
	p.out[0] = &kgo.Record{Key: p.keys.key(r.DeviceId), Value: p.encode(nil, r)}
	return p.out[:]
}

func (p *perEvent) Flush() []*kgo.Record { return nil }

// envelopes batches a device's events into Streaming API messages: a
// message holds up to batch events of one device (so it can be keyed by
// DeviceId), and none waits for more than a minute of event time.
type envelopes struct {
	batch   int
	tenant  string
	pending map[string]*deviceBatch
	order   []*deviceBatch // first-seen order, for reproducible output
	keys    keyCache
	n       int
	out     []*kgo.Record
}

type deviceBatch struct {
	id   string
	recs []Record
}

const envelopeMaxWait = 60 * beacon.Second

func (e *envelopes) Add(r *Record) []*kgo.Record {
	if e.keys == nil {
		e.keys = keyCache{}
	}
	e.out = e.out[:0]
	b := e.pending[r.DeviceId]
	if b == nil {
		b = &deviceBatch{id: r.DeviceId}
		e.pending[r.DeviceId] = b
		e.order = append(e.order, b)
	}
	b.recs = append(b.recs, *r)
	if len(b.recs) >= e.batch {
		e.emit(b)
	}
	if e.n++; e.n%4096 == 0 {
		for _, o := range e.order {
			if len(o.recs) > 0 && r.Reported-o.recs[0].Reported > envelopeMaxWait {
				e.emit(o)
			}
		}
	}
	return e.out
}

func (e *envelopes) emit(b *deviceBatch) {
	e.out = append(e.out, &kgo.Record{Key: e.keys.key(b.id), Value: AppendEnvelope(nil, e.tenant, b.recs)})
	b.recs = b.recs[:0]
}

func (e *envelopes) Flush() []*kgo.Record {
	e.out = e.out[:0]
	for _, b := range e.order {
		if len(b.recs) > 0 {
			e.emit(b)
		}
	}
	return e.out
}

// Producer produces a fleet's records to one topic asynchronously, through
// a MessageEncoder, and remembers the first failure: Write returns it at
// the next record, so a generator loop stops soon after the broker fails.
type Producer struct {
	client *kgo.Client
	enc    MessageEncoder
	ctx    context.Context
	mu     sync.Mutex
	err    error
}

// NewProducer connects to the seed brokers (comma-separated host:port) and
// checks, within 15 s, that they answer, so that a wrong address fails
// before any record is generated. Records are produced with ctx: once it
// is done, what is still buffered fails with its error. Extra options
// (e.g. compression) are passed to the client.
func NewProducer(ctx context.Context, brokers, topic string, enc MessageEncoder, opts ...kgo.Opt) (*Producer, error) {
	var seeds []string
	for _, b := range strings.Split(brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			seeds = append(seeds, b)
		}
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(seeds...),
		kgo.DefaultProduceTopic(topic),
		kgo.AllowAutoTopicCreation(),
		kgo.RecordDeliveryTimeout(time.Minute),
		kgo.ProducerLinger(5 * time.Millisecond),
	}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("kafka: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := cl.Ping(pctx); err != nil {
		cl.Close()
		return nil, fmt.Errorf("cannot reach Kafka at %s: %w", brokers, err)
	}
	return &Producer{client: cl, enc: enc, ctx: ctx}, nil
}

func (p *Producer) failed() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

func (p *Producer) produce(recs []*kgo.Record) error {
	for _, m := range recs {
		p.client.Produce(p.ctx, m, func(_ *kgo.Record, err error) {
			if err != nil {
				p.mu.Lock()
				if p.err == nil {
					p.err = fmt.Errorf("kafka: %w", err)
				}
				p.mu.Unlock()
			}
		})
	}
	return p.failed()
}

// Write encodes r and produces the messages it completes. It returns the
// first failure of any earlier message.
func (p *Producer) Write(r *Record) error { return p.produce(p.enc.Add(r)) }

// Send produces the messages the encoder still holds (a device's partial
// envelope), without waiting for the broker: a paced producer calls it at
// every tick so that no event waits for its batch to fill.
func (p *Producer) Send() error { return p.produce(p.enc.Flush()) }

// Flush sends what the encoder holds and waits until the broker has
// acknowledged every message, or ctx is done.
func (p *Producer) Flush(ctx context.Context) error {
	err := p.Send()
	if ferr := p.client.Flush(ctx); ferr != nil && err == nil {
		err = fmt.Errorf("kafka: %w", ferr)
	}
	if err == nil {
		err = p.failed()
	}
	return err
}

// Close closes the client; call Flush first to keep what is buffered.
func (p *Producer) Close() { p.client.Close() }
