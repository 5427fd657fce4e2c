package stream

import (
	"bytes"
	"sync"

	"github.com/klauspost/compress/s2"
	"github.com/twmb/franz-go/pkg/kgo"
)

// fetchPool reuses what kgo allocates per fetched record batch: the
// buffer a compressed batch is decompressed into, which the records'
// values alias, and the batch's slice of records. Without it every batch
// is a fresh allocation (two days from 6 partitions: 365 MB of
// decompressed batches and 112 MB of records for 828k records), faulted
// in page by page and collected again. kgo puts both back once every
// record of the batch was recycled (kgo.Record.Recycle), which the
// merger does when it has handed a fetch's events on (merger.recycle).
//
// It holds at most fetchPoolBytes of free buffers and as many free record
// slices; what does not fit is left to the collector.
type fetchPool struct {
	mu       sync.Mutex
	bufs     [][]byte
	bufBytes int
	recs     [][]kgo.Record

	// For tests: poison fills the buffers put back with a byte no record
	// holds, so that a string still aliasing one shows; reused counts the
	// buffers handed out again.
	poison bool
	reused int
}

// newFetchPool returns replay's pool; tests replace it to poison it.
var newFetchPool = func() *fetchPool { return new(fetchPool) }

// xerialMagic starts a snappy batch in xerial's framing.
var xerialMagic = []byte{0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0}

const (
	fetchPoolBytes = 16 << 20
	fetchPoolRecs  = 256
)

var (
	_ kgo.PoolDecompressBytes = (*fetchPool)(nil)
	_ kgo.PoolRecords         = (*fetchPool)(nil)
)

// GetDecompressBytes returns the smallest free buffer that holds the
// decompressed batch, when its size is known (snappy says it), or the
// largest one.
func (p *fetchPool) GetDecompressBytes(compressed []byte, codec kgo.CompressionCodecType) []byte {
	want := 0
	// Snappy's block format says its decoded length; xerial's framing
	// (the Java producer's) does not. A length past the pool's bound is
	// taken as unknown: a corrupt header must not reserve gigabytes
	// before kgo's own bound refuses the batch.
	if codec == kgo.CodecSnappy && !bytes.HasPrefix(compressed, xerialMagic) {
		if n, err := s2.DecodedLen(compressed); err == nil && n <= fetchPoolBytes {
			want = n
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	best := -1
	for i, b := range p.bufs {
		switch {
		case want > 0 && cap(b) < want:
		case best < 0,
			want > 0 && cap(b) < cap(p.bufs[best]),
			want == 0 && cap(b) > cap(p.bufs[best]):
			best = i
		}
	}
	if best < 0 {
		return make([]byte, 0, want)
	}
	b := p.bufs[best]
	last := len(p.bufs) - 1
	p.bufs[best], p.bufs[last] = p.bufs[last], nil
	p.bufs = p.bufs[:last]
	p.bufBytes -= cap(b)
	p.reused++
	return b[:0]
}

// PutDecompressBytes keeps a buffer kgo is done with (it zeroed it).
func (p *fetchPool) PutDecompressBytes(b []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.poison {
		b = b[:cap(b)]
		for i := range b {
			b[i] = 0xfe
		}
	}
	if p.bufBytes+cap(b) > fetchPoolBytes {
		return
	}
	p.bufs = append(p.bufs, b)
	p.bufBytes += cap(b)
}

// GetRecords returns a free slice of at least n records, or a new one.
func (p *fetchPool) GetRecords(n int) []kgo.Record {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := len(p.recs) - 1; i >= 0; i-- {
		if r := p.recs[i]; cap(r) >= n {
			last := len(p.recs) - 1
			p.recs[i], p.recs[last] = p.recs[last], nil
			p.recs = p.recs[:last]
			return r[:0]
		}
	}
	return make([]kgo.Record, 0, n)
}

// PutRecords keeps a slice of records kgo is done with (they are zeroed).
func (p *fetchPool) PutRecords(r []kgo.Record) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.recs) < fetchPoolRecs {
		p.recs = append(p.recs, r)
	}
}
