package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/beaconhunt/beacon/pkg/beacon"
	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.uber.org/zap"
)

// Store is the detector's state: one Pebble database per process, shared by
// the partitions the process owns. It is safe for concurrent use; each
// Partition it returns is not, and is meant to be driven by one worker.
type Store struct {
	db *pebble.DB
	p  beacon.Params
	wo *pebble.WriteOptions
	// cfgSync writes the store's config: synced, unless there is no WAL.
	cfgSync *pebble.WriteOptions
	log     *zap.Logger

	mu     sync.Mutex
	parts  map[int32]*Partition
	closed bool

	// Knobs that tests turn to reach rare paths.
	hashMask uint64 // hash collisions

	// Decoded timestamp blocks cached by all partitions (blocks.go).
	blockBudget int64
	cached      atomic.Int64
	commitEvery int
	inMemory    bool // WithInMemory: Close commits nothing
}

// CacheBudget returns the bytes the store's cache of decoded timestamp
// blocks may hold (a quarter of WithMemoryBudget), and how many it holds.
func (s *Store) CacheBudget() (budget, cached int64) { return s.blockBudget, s.cached.Load() }

// Option configures Open.
type Option interface{ apply(*config) }

type config struct {
	cacheSize    int64
	memTableSize uint64
	log          *zap.Logger
	inMemory     bool
	blockBudget  int64
	commitEvery  int
}

// memTables is how many memtables Pebble may hold before it stalls writes.
const memTables = 2

type optFunc func(*config)

func (f optFunc) apply(c *config) { f(c) }

// WithCacheSize sets Pebble's block cache (default 64 MiB). The cache holds
// uncompressed sstable blocks; it matters when the state's own cache of
// decoded timestamp blocks (WithMemoryBudget) misses — out-of-order
// inserts, eviction and row rendering over many tuples — and the blocks are
// no longer in the memtables: a miss costs a read from the file system.
// Raise it when the state on disk is many times the cache and those show up
// in profiles. Pebble charges its memtables to the same cache, so the store
// sizes it at this plus twice WithMemTableSize; the sum bounds Pebble's
// resident memory.
func WithCacheSize(bytes int64) Option { return optFunc(func(c *config) { c.cacheSize = bytes }) }

// WithMemTableSize sets the size of one Pebble memtable (default 32 MiB; up
// to two are held, so the write buffer is bounded by twice this). Larger
// memtables let a timestamp be inserted and later evicted before it is ever
// flushed to disk (a short lookback, or a large one at a low event rate);
// smaller ones bound memory on small machines.
func WithMemTableSize(bytes int64) Option {
	return optFunc(func(c *config) { c.memTableSize = uint64(bytes) })
}

// WithMemoryBudget sizes the store's caches from one number, the memory
// the state may use beyond its tuple index: a quarter to the cache of
// decoded timestamp blocks, a quarter to Pebble's block cache, an eighth to
// each of Pebble's two memtables; the rest is headroom for batches held
// back (WithCommitEvery) and rows being rendered. Use it to fit a process
// into a memory limit (`--memory-limit`): when the caches are full, blocks
// that are not hot are dropped from memory and read again from Pebble on
// use (slower, never out of memory). The tuple index — about 105 bytes per
// live tuple (docs/state.md) — is not part of it: size the limit for the
// tuples the partitions hold. Options after it override its parts. At least
// 16 MiB. Without it: a 32 MiB block cache (what covers the hot tail blocks
// of a few hundred thousand tuples), Pebble's cache at 64 MiB and two 32 MiB
// memtables.
//
// It does not set the Go memory limit: the garbage collector lets the heap
// grow to twice what is live before collecting (GOGC=100), so a process
// that must stay under a limit should also call debug.SetMemoryLimit (what
// `--memory-limit` is for) with the index, this budget and that slack in
// mind (docs/state.md, Footprint).
func WithMemoryBudget(bytes int64) Option {
	return optFunc(func(c *config) {
		bytes = max(bytes, 16<<20)
		c.blockBudget, c.cacheSize, c.memTableSize = bytes/4, bytes/4, uint64(bytes/8)
	})
}

// WithLogger routes Pebble's own log lines (flushes, compactions, WAL
// recovery, background errors) to l. Without it they are discarded.
func WithLogger(l *zap.Logger) Option { return optFunc(func(c *config) { c.log = l }) }

// WithInMemory keeps the whole store in memory (Pebble's vfs.NewMem, no
// write-ahead log, no fsync); dir is then only a name. Use it for scratch
// state that nothing reopens — `beacon replay` rebuilds its state from the
// topic on every run — where durability costs CPU and disk for nothing.
// Nothing survives Close or a crash, and the state's size is bounded by
// RAM, not disk: a replay of a long window over many tuples needs the
// memory its Pebble files would have taken (docs/state.md, Footprint).
func WithInMemory() Option { return optFunc(func(c *config) { c.inMemory = true }) }

// WithCommitEvery makes Apply and AdvanceTo commit every n-th call instead
// of every call (n ≤ 0: only when what is held back grows large, and at
// Partition.Flush and Store.Close). In between, the changed blocks stay in
// memory and the other writes in the partition's batch; a commit writes them
// all, with the offset and blob of the last Apply, atomically, so after a
// crash the store still holds exactly the state of its recorded offset —
// an older one, and the consumer re-reads more. Offset reports the last
// Apply's offset, not the committed one. Use it when batches are small and
// frequent (a tuple then gets one timestamp per batch, and every commit
// rewrites its newest block), or for scratch state (with WithInMemory).
// The default, 1, commits every call.
func WithCommitEvery(n int) Option {
	return optFunc(func(c *config) { c.commitEvery = max(n, 0) })
}

// ErrParamsChanged is returned by Open when the directory holds state built
// with another Lookback or EndOffset: windows already evicted cannot be
// regrown, so the state must be dropped and rebuilt from the input topic.
var ErrParamsChanged = errors.New("state: directory was built with another lookback or end offset (or layout version)")

// Open opens (or creates) the store in dir for the query parameters p. Only
// p.Lookback and p.EndOffset shape what is stored; the other parameters are
// read at evaluation and may change between runs.
func Open(dir string, p beacon.Params, opts ...Option) (*Store, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	cfg := config{cacheSize: 64 << 20, memTableSize: 32 << 20, blockBudget: 32 << 20, commitEvery: 1}
	for _, o := range opts {
		o.apply(&cfg)
	}
	log := cfg.log
	if log == nil {
		log = zap.NewNop()
	}
	po := &pebble.Options{
		// Pebble reserves its memtables in the block cache: without the
		// extra room they would leave no space for blocks.
		CacheSize:                   cfg.cacheSize + memTables*int64(cfg.memTableSize),
		MemTableSize:                cfg.memTableSize,
		MemTableStopWritesThreshold: memTables,
		Logger:                      pebbleLogger{log.WithOptions(zap.AddCallerSkip(1))},
		FormatMajorVersion:          pebble.FormatNewest,
	}
	if cfg.inMemory {
		po.FS, po.DisableWAL = vfs.NewMem(), true
	}
	db, err := pebble.Open(dir, po)
	if err != nil {
		return nil, fmt.Errorf("state: open %s: %w", dir, err)
	}
	s := &Store{db: db, p: p, wo: pebble.NoSync, cfgSync: pebble.Sync, log: log, parts: make(map[int32]*Partition),
		hashMask: ^uint64(0), blockBudget: cfg.blockBudget, commitEvery: cfg.commitEvery, inMemory: cfg.inMemory}
	if cfg.inMemory { // no WAL to sync
		s.cfgSync = pebble.NoSync
	}
	if err := s.checkConfig(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// checkConfig records the window shape on first use and refuses another.
func (s *Store) checkConfig() error {
	want := []byte{version}
	want = binary.AppendVarint(want, int64(s.p.Lookback))
	want = binary.AppendVarint(want, int64(s.p.EndOffset))
	got, closer, err := s.db.Get([]byte(cfgKey))
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		return s.db.Set([]byte(cfgKey), want, s.cfgSync)
	case err != nil:
		return err
	}
	defer closer.Close()
	if string(got) != string(want) {
		return ErrParamsChanged
	}
	return nil
}

// Close closes the store. Partitions obtained from it must not be used
// afterwards. It commits what the partitions held back (WithCommitEvery),
// except in memory (WithInMemory), where nothing survives Close and a
// commit would only cost the CPU of writing it.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var err error
	for _, p := range s.parts {
		if p.err == nil && !s.inMemory {
			if ferr := p.Flush(); ferr != nil && err == nil {
				err = ferr
			}
		}
		p.fail(errClosed)
	}
	s.parts = nil
	if cerr := s.db.Close(); err == nil {
		err = cerr
	}
	return err
}

var (
	errClosed  = errors.New("state: store closed")
	errDropped = errors.New("state: partition dropped")
)

// Offsets returns, for every partition with a recorded offset, the next
// offset to consume: where the consumer resumes so that the state and the
// input agree.
func (s *Store) Offsets() (map[int32]int64, error) {
	// Partition keys start below 0x80000000; store-wide keys start at 0xFF.
	it, err := s.db.NewIter(&pebble.IterOptions{UpperBound: []byte{0x80, 0, 0, 0}})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	out := make(map[int32]int64)
	var k []byte
	for valid := it.First(); valid; {
		pid := int32(binary.BigEndian.Uint32(it.Key()))
		k = kindKey(k, pid, kindHeader)
		if it.SeekGE(k) && string(it.Key()) == string(k) {
			var h header
			if err := h.decode(it.Value()); err != nil {
				return nil, fmt.Errorf("state: partition %d header: %w", pid, err)
			}
			if h.offset >= 0 {
				out[pid] = h.offset
			}
		}
		if pid == maxPID {
			break
		}
		valid = it.SeekGE(appendPID(k[:0], pid+1))
	}
	return out, it.Error()
}

// Partition returns the state of partition id, loading it from Pebble the
// first time (every destination then reports as dirty). Later calls return
// the same *Partition, unless an Apply or AdvanceTo on it failed: then its
// memory may be ahead of Pebble, and it is reloaded from the last committed
// batch (whose Offset says where to resume consuming).
//
// Close and DropPartition must not run while a worker uses the partitions
// they affect.
func (s *Store) Partition(id int32) (*Partition, error) {
	if id < 0 {
		return nil, fmt.Errorf("state: negative partition %d", id)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errClosed
	}
	if p, ok := s.parts[id]; ok && p.err == nil {
		return p, nil
	}
	start := time.Now()
	p, err := loadPartition(s, id)
	if err != nil {
		return nil, err
	}
	s.parts[id] = p
	s.log.Info("partition state loaded", zap.Int32("partition", id), zap.Int("tuples", p.ntuples),
		zap.Int64("offset", p.h.offset), zap.Duration("took", time.Since(start)))
	return p, nil
}

// DropPartition deletes everything stored for partition id with one range
// deletion (use it when the partition is revoked: the next owner rebuilds
// it from the input topic). A *Partition obtained before fails afterwards.
func (s *Store) DropPartition(id int32) error {
	if id < 0 {
		return fmt.Errorf("state: negative partition %d", id)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	if p, ok := s.parts[id]; ok {
		p.fail(errDropped)
		delete(s.parts, id)
	}
	lo, hi := partitionSpan(id)
	if err := s.db.DeleteRange(lo, hi, s.wo); err != nil {
		return err
	}
	s.log.Info("partition state dropped", zap.Int32("partition", id))
	return nil
}

// pebbleLogger adapts zap to Pebble's printf-style logger. Pebble formats
// its own messages, so they travel as one field under a constant message.
type pebbleLogger struct{ l *zap.Logger }

func (z pebbleLogger) Infof(format string, args ...any) {
	if ce := z.l.Check(zap.InfoLevel, "pebble"); ce != nil {
		ce.Write(zap.String("detail", fmt.Sprintf(format, args...)))
	}
}

func (z pebbleLogger) Errorf(format string, args ...any) {
	if ce := z.l.Check(zap.ErrorLevel, "pebble error"); ce != nil {
		ce.Write(zap.String("detail", fmt.Sprintf(format, args...)))
	}
}

// Fatalf is called by Pebble on unrecoverable corruption; like Pebble's
// default logger it does not return.
func (z pebbleLogger) Fatalf(format string, args ...any) {
	z.l.Fatal("pebble fatal", zap.String("detail", fmt.Sprintf(format, args...)))
}
