package stream

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// alertBook is one partition's alert bookkeeping: when its warm-up started
// and whether it is over, the current re-alert period and the tuples
// alerted in it. It decides which members of the beacon set alert at an
// evaluation point, and nothing else: it reads no state, publishes
// nothing and takes no lock (the worker that owns it does all that).
//
// At an evaluation point the worker calls at(now) once, then claim for
// each member of the destinations it evaluates: the members claim accepts
// are the point's alerts.
type alertBook struct {
	// Configuration (newAlertBook); not in the meta blob.
	warmup  beacon.Time   // stream time after the first evaluation during which nothing alerts
	restart beacon.Time   // a jump of stream time larger than this (the lookback) restarts the warm-up
	reAlert time.Duration // the length of a re-alert period (EpochOf)

	// State, recorded in the meta blob.
	first       beacon.Time // stream time where the warm-up started
	hasFirst    bool
	warm        bool // not recorded: at recomputes it from first
	lastEval    beacon.Time
	hasLastEval bool
	epoch       int64                     // the current re-alert period; minEpoch before the first point
	alerted     map[beacon.Tuple]struct{} // tuples alerted in epoch
	// enc caches the encoded alerted set (nil: to encode): the meta blob
	// is written at every point, the set changes far less often.
	enc []byte
}

// minEpoch is the period of a book that has seen no evaluation point.
const minEpoch = math.MinInt64

func newAlertBook(warmup, lookback, reAlert time.Duration) alertBook {
	return alertBook{
		warmup: beacon.Time(warmup / 100), restart: beacon.Time(lookback / 100), reAlert: reAlert,
		epoch: minEpoch, alerted: make(map[beacon.Tuple]struct{}),
	}
}

// at opens the evaluation point at stream time now and returns its
// re-alert period. all says that every member of the set is due, not only
// those of the destinations that changed: a new period began, or the
// warm-up just ended.
//
// The warm-up runs on stream time from the first evaluation, and again
// after stream time jumped by more than the lookback (the window then
// restarted empty: a 1970 record first in a partition must not end the
// warm-up at once). It is over once stream time is at least the warm-up
// past its start.
func (b *alertBook) at(now beacon.Time) (epoch int64, all bool) {
	e := EpochOf(now, b.reAlert)
	if e != b.epoch {
		// A new period: every member is due again.
		b.epoch = e
		clear(b.alerted)
		b.enc = nil
		all = true
	}
	if !b.hasFirst || b.hasLastEval && now-b.lastEval > b.restart {
		b.first, b.hasFirst, b.warm = now, true, false
	}
	b.lastEval, b.hasLastEval = now, true
	if !b.warm && now-b.first >= b.warmup {
		b.warm, all = true, true // every member is now alerted
	}
	return e, all
}

// claim reports whether member t alerts at the current point — the
// warm-up is over and t has not alerted in this period — and if so
// records that it has. An allow-listed member is claimed too: it is
// handled for the period, like an alert.
func (b *alertBook) claim(t *beacon.Tuple) bool {
	if !b.warm {
		return false
	}
	if _, done := b.alerted[*t]; done {
		return false
	}
	b.alerted[*t] = struct{}{}
	b.enc = nil
	return true
}

// The meta blob of a state partition, written with every Apply of its
// segments (Partition.Apply). It holds the alert bookkeeping and the
// worker's time state; version 2:
//
//	+---------+--------------------+-----------------+---------------------------+
//	| version | warm-up start      | period (epoch)  | alerted set               |
//	| byte 2  | varint, MinInt64:  | varint          | uvarint n, n × tuple      |
//	|         | not started        |                 |                           |
//	+---------+--------------------+-----------------+---------------------------+
//	| flags   | stream time W      | open interval   | last evaluation           |
//	| byte    | varint, if flag 1  | varint, if 2    | varint, if flag 8         |
//	+---------+--------------------+-----------------+---------------------------+
//	| sources: uvarint m, m × source                                             |
//	+----------------------------------------------------------------------------+
//
//	flags:  1 W known, 2 an interval is open, 4 the point is unconfirmed
//	        (its alerts may be unpublished), 8 a last evaluation
//	tuple:  beacon.Tuple.AppendBinary: 6 × (uvarint len, bytes) — DeviceId,
//	        DeviceName, AccountName, AccountDomain, FileName, RemoteIP — then
//	        varint RemotePort
//	source: uvarint len, topic | uvarint partition | byte flags (wmHasTime,
//	        wmIdle) | varint watermark, if wmHasTime
//
// The sources are sorted by topic and partition; the alerted set is in no
// order. The records held for stream time are not in it: the recorded
// offset is the first of them, so a restart reads them again.
//
// A blob of another version, or one that does not parse, is an error
// (errMeta): the worker stops on it, and the detector drops the
// partition's state and rebuilds it from the repartition topic, alerts
// muted up to the state's offset (logged, counted as a corrupt state in
// beacon_events_dropped_total). Resuming with the bookkeeping forgotten
// instead would repeat the period's alerts and, worse, restart the
// warm-up: the alerts of a whole warm-up would be lost. (One case the
// rebuild cannot tell: a state recorded at an unconfirmed point, whose
// alerts were not all published, is rebuilt with that point muted too.)
const metaVersion = 2

const (
	metaHasSW       = 1
	metaOpen        = 2
	metaUnconfirmed = 4
	metaLastEval    = 8
)

// errMeta marks a meta blob this build cannot read.
var errMeta = errors.New("stream: partition meta blob unreadable")

// metaTime is the worker's time state that the meta blob records beside
// the alert bookkeeping (see worker for what each field means).
type metaTime struct {
	sw          beacon.Time
	hasSW       bool
	open        int64
	hasOpen     bool
	unconfirmed bool
	srcs        map[tp]*srcMark
}

// appendMeta appends the meta blob of b and t to dst.
func appendMeta(dst []byte, b *alertBook, t *metaTime) []byte {
	dst = append(dst, metaVersion)
	first := int64(b.first)
	if !b.hasFirst {
		first = math.MinInt64
	}
	dst = binary.AppendVarint(dst, first)
	dst = binary.AppendVarint(dst, b.epoch)
	if b.enc == nil {
		a := binary.AppendUvarint(nil, uint64(len(b.alerted)))
		for t := range b.alerted {
			a = t.AppendBinary(a)
		}
		b.enc = a
	}
	dst = append(dst, b.enc...)
	var flags byte
	if t.hasSW {
		flags |= metaHasSW
	}
	if t.hasOpen {
		flags |= metaOpen
	}
	if t.unconfirmed {
		flags |= metaUnconfirmed
	}
	if b.hasLastEval {
		flags |= metaLastEval
	}
	dst = append(dst, flags)
	if t.hasSW {
		dst = binary.AppendVarint(dst, int64(t.sw))
	}
	if t.hasOpen {
		dst = binary.AppendVarint(dst, t.open)
	}
	if b.hasLastEval {
		dst = binary.AppendVarint(dst, int64(b.lastEval))
	}
	keys := make([]tp, 0, len(t.srcs))
	for k := range t.srcs {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b tp) int {
		if c := strings.Compare(a.topic, b.topic); c != 0 {
			return c
		}
		return int(a.p) - int(b.p)
	})
	dst = binary.AppendUvarint(dst, uint64(len(keys)))
	for _, k := range keys {
		m := t.srcs[k]
		dst = appendString(dst, k.topic)
		dst = binary.AppendUvarint(dst, uint64(k.p))
		var f byte
		if m.hasTime {
			f |= wmHasTime
		}
		if m.idle {
			f |= wmIdle
		}
		dst = append(dst, f)
		if m.hasTime {
			dst = binary.AppendVarint(dst, int64(m.time))
		}
	}
	return dst
}

// decodeMeta restores into b (its state, not its configuration) and t what
// appendMeta wrote. On an error (wrapping errMeta) it changes neither.
func decodeMeta(src []byte, b *alertBook, t *metaTime) error {
	if len(src) == 0 {
		return fmt.Errorf("%w: empty", errMeta)
	}
	if src[0] != metaVersion {
		return fmt.Errorf("%w: version %d, this build reads version %d", errMeta, src[0], metaVersion)
	}
	r := metaReader{b: src[1:]}
	first := r.varint()
	e := r.varint()
	cnt := r.uvarint()
	alerted := make(map[beacon.Tuple]struct{})
	for i := uint64(0); i < cnt && r.err == nil; i++ {
		alerted[r.tuple()] = struct{}{}
	}
	flags := r.byte()
	var sw, open, last int64
	if flags&metaHasSW != 0 {
		sw = r.varint()
	}
	if flags&metaOpen != 0 {
		open = r.varint()
	}
	if flags&metaLastEval != 0 {
		last = r.varint()
	}
	srcs := make(map[tp]*srcMark)
	n := r.uvarint()
	for i := uint64(0); i < n && r.err == nil; i++ {
		k := tp{topic: r.str(), p: int32(r.uvarint())}
		f := r.byte()
		m := &srcMark{idle: f&wmIdle != 0}
		if f&wmHasTime != 0 {
			m.time, m.hasTime = beacon.Time(r.varint()), true
		}
		srcs[k] = m
	}
	if r.err != nil {
		return fmt.Errorf("%w (version %d): %w", errMeta, metaVersion, r.err)
	}
	if len(r.b) != 0 {
		return fmt.Errorf("%w (version %d): %d bytes after the end", errMeta, metaVersion, len(r.b))
	}
	b.first, b.hasFirst = 0, false
	if first != math.MinInt64 {
		b.first, b.hasFirst = beacon.Time(first), true
	}
	b.warm = false
	b.epoch, b.alerted, b.enc = e, alerted, nil
	b.lastEval, b.hasLastEval = beacon.Time(last), flags&metaLastEval != 0
	*t = metaTime{
		sw: beacon.Time(sw), hasSW: flags&metaHasSW != 0,
		open: open, hasOpen: flags&metaOpen != 0,
		unconfirmed: flags&metaUnconfirmed != 0,
		srcs:        srcs,
	}
	return nil
}

// encodeMeta returns the worker's meta blob in a buffer of the worker's
// that the next call overwrites (Partition.Apply copies it).
//
// Inside an advance a watermark record makes, the sources are recorded as
// they were before that record (worker.advance says why; W has not moved
// yet there either).
func (w *worker) encodeMeta() []byte {
	t := metaTime{sw: w.sw, hasSW: w.hasSW, open: w.open, hasOpen: w.hasOpen, unconfirmed: w.unconfirmed, srcs: w.srcs}
	if len(w.srcUndo) > 0 {
		t.srcs = make(map[tp]*srcMark, len(w.srcs))
		maps.Copy(t.srcs, w.srcs)
		for i := len(w.srcUndo) - 1; i >= 0; i-- { // the first entry of a source is its oldest
			u := &w.srcUndo[i]
			if !u.existed {
				delete(t.srcs, u.k)
				continue
			}
			was := u.was
			t.srcs[u.k] = &was
		}
	}
	w.metaBuf = appendMeta(w.metaBuf[:0], &w.book, &t)
	return w.metaBuf
}

// loadMeta restores what encodeMeta wrote. An empty blob (a new state)
// restores nothing; one that does not decode is an error, and the worker
// restores nothing from it.
func (w *worker) loadMeta(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	var t metaTime
	if err := decodeMeta(b, &w.book, &t); err != nil {
		return err
	}
	w.srcs = t.srcs
	w.sw, w.hasSW = t.sw, t.hasSW
	w.open, w.hasOpen = t.open, t.hasOpen
	w.unconfirmed = t.unconfirmed
	return nil
}

type metaReader struct {
	b   []byte
	err error
}

func (r *metaReader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err, r.b = errShort, nil
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *metaReader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err, r.b = errShort, nil
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *metaReader) byte() byte {
	if len(r.b) == 0 {
		r.err = errShort
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *metaReader) tuple() beacon.Tuple {
	if r.err != nil {
		return beacon.Tuple{}
	}
	t, n, err := beacon.DecodeTuple(r.b)
	if err != nil {
		r.err, r.b = errShort, nil
		return beacon.Tuple{}
	}
	r.b = r.b[n:]
	return t
}

func (r *metaReader) str() string {
	s, rest, err := readString(r.b)
	if err != nil {
		r.err, r.b = err, nil
		return ""
	}
	r.b = rest
	return strings.Clone(s)
}
