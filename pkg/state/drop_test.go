package state

import (
	"errors"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// fill applies a scenario to partition pid in batches of 50.
func fill(t *testing.T, s *Store, pid int32, seed uint64) *Partition {
	t.Helper()
	p, err := s.Partition(pid)
	if err != nil {
		t.Fatal(err)
	}
	ins := scenario(rand.New(rand.NewPCG(seed, 7)), pid%8, testBase, 20*time.Minute)
	for i := 0; i < len(ins); i += 50 {
		conns, doms := stateInputs(ins[i:min(i+50, len(ins))])
		if _, err := p.Apply(conns, doms, int64(min(i+50, len(ins))), []byte("meta")); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// TestDropPartition: one range deletion removes every key of the partition
// and nothing of the others, in memory, on disk and after a reopen.
func TestDropPartition(t *testing.T) {
	dir := t.TempDir()
	params := testParams(10*time.Minute, time.Second)
	s := openT(t, dir, params)
	defer func() { s.Close() }()
	pids := []int32{0, 1, 2, math.MaxInt32}
	before := map[int32][]beacon.Row{}
	keys := map[int32]int{}
	for i, pid := range pids {
		p := fill(t, s, pid, uint64(i))
		rows, err := p.Beacons()
		if err != nil {
			t.Fatal(err)
		}
		before[pid], keys[pid] = rows, countKeys(t, s, pid)
		if keys[pid] < 20 { // tuples, blocks, domains, header, meta
			t.Fatalf("p%d: only %d keys", pid, keys[pid])
		}
	}
	if len(before[0])+len(before[1])+len(before[2]) == 0 {
		t.Fatal("no rows: the test would not see a difference")
	}
	offs, err := s.Offsets()
	if err != nil {
		t.Fatal(err)
	}
	if len(offs) != len(pids) {
		t.Fatalf("offsets %v", offs)
	}
	dropped, _ := s.Partition(1)
	for _, drop := range []int32{1, math.MaxInt32} {
		if err := s.DropPartition(drop); err != nil {
			t.Fatal(err)
		}
		if n := countKeys(t, s, drop); n != 0 {
			t.Fatalf("p%d: %d keys left after drop", drop, n)
		}
	}
	if _, err := dropped.Beacons(); !errors.Is(err, errDropped) {
		t.Fatalf("dropped partition still usable: %v", err)
	}
	check := func() {
		t.Helper()
		offs, err := s.Offsets()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := offs[1]; ok || len(offs) != 2 {
			t.Fatalf("offsets after drop: %v", offs)
		}
		for _, pid := range []int32{0, 2} {
			if n := countKeys(t, s, pid); n != keys[pid] {
				t.Fatalf("p%d: %d keys, had %d", pid, n, keys[pid])
			}
			p, err := s.Partition(pid)
			if err != nil {
				t.Fatal(err)
			}
			rows, err := p.Beacons()
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(rows, before[pid]) {
				t.Fatalf("p%d: rows changed by another partition's drop", pid)
			}
		}
		p, err := s.Partition(1)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := p.Offset(); ok || p.ntuples != 0 || len(p.ips) != 0 || p.Meta() != nil {
			t.Fatal("dropped partition reloads with state")
		}
	}
	check()
	s.Close()
	s = openT(t, dir, params)
	check()
	// A rebuilt partition starts from scratch and works.
	p := fill(t, s, 1, 1)
	rows, err := p.Beacons()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(rows, before[1]) {
		t.Fatal("rebuilt partition differs")
	}
}

// TestParamsChanged: a store built with one window shape refuses another.
func TestParamsChanged(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, testParams(10*time.Minute, time.Second))
	s.Close()
	if _, err := Open(dir, testParams(20*time.Minute, time.Second)); !errors.Is(err, ErrParamsChanged) {
		t.Fatalf("got %v", err)
	}
	p := testParams(10*time.Minute, time.Second)
	p.JitterThreshold = 30 // read at evaluation only
	s = openT(t, dir, p)
	s.Close()
}

// TestReloadAfterError: when Apply fails (here: memory made inconsistent
// with Pebble), the partition refuses further use and Store.Partition
// reloads the last committed state.
func TestReloadAfterError(t *testing.T) {
	s := openT(t, t.TempDir(), testParams(10*time.Minute, time.Second))
	defer s.Close()
	p := fill(t, s, 0, 3)
	rows, err := p.Beacons()
	if err != nil {
		t.Fatal(err)
	}
	off, _ := p.Offset()
	st, _ := p.StreamTime()
	var victim *tuple
	for _, tp := range p.allTuples() {
		if tp.distinct > 1 && (victim == nil || tp.first < victim.first) {
			victim = tp
		}
	}
	victim.bins = [2]bin{} // its first delta is not counted
	if victim.ext != 0 {
		p.exts[victim.ext-1].sum = beacon.Summary{}
	}
	if err := p.AdvanceTo(st + 5*60*beacon.Second); !errors.Is(err, errCorrupt) {
		t.Fatalf("AdvanceTo: %v", err)
	}
	if _, err := p.Apply(nil, nil, off+1, nil); !errors.Is(err, errCorrupt) {
		t.Fatalf("Apply after a failure: %v", err)
	}
	q, err := s.Partition(0)
	if err != nil {
		t.Fatal(err)
	}
	if q == p {
		t.Fatal("failed partition not reloaded")
	}
	got, err := q.Beacons()
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := q.Offset(); o != off || !reflect.DeepEqual(got, rows) {
		t.Fatalf("reloaded offset %d (want %d), %d rows (want %d)", o, off, len(got), len(rows))
	}
	if d := q.Dirty(); len(d) != q.destIndex.n {
		t.Fatalf("%d of %d destinations dirty after a reload", len(d), q.destIndex.n)
	}
}

// TestConcurrentPartitions: workers drive their partitions of one store in
// parallel (run with -race), and each ends as the batch query says.
func TestConcurrentPartitions(t *testing.T) {
	params := testParams(10*time.Minute, time.Second)
	s := openT(t, t.TempDir(), params)
	defer s.Close()
	errs := make(chan error, 3)
	for pid := range int32(3) {
		go func() {
			p, err := s.Partition(pid)
			if err != nil {
				errs <- err
				return
			}
			ins := scenario(rand.New(rand.NewPCG(uint64(pid), 9)), pid, testBase, 15*time.Minute)
			for i := 0; i < len(ins); i += 25 {
				conns, doms := stateInputs(ins[i:min(i+25, len(ins))])
				if _, err := p.Apply(conns, doms, int64(min(i+25, len(ins))), nil); err != nil {
					errs <- err
					return
				}
				if _, err := s.Offsets(); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	// Wait for every writer before failing: a Fatal with writers still
	// running would close the store under them.
	var first error
	for range 3 {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		t.Fatal(first)
	}
	for pid := range int32(3) {
		p, _ := s.Partition(pid)
		m := newModel(t, pid, params)
		ins := scenario(rand.New(rand.NewPCG(uint64(pid), 9)), pid, testBase, 15*time.Minute)
		m.feed(ins)
		m.offset = int64(len(ins))
		m.check(p, true)
	}
}
