package beacon

import (
	"encoding/binary"
	"hash/maphash"
	"unsafe"
)

// Hunt's shards find a tuple, and a (RemoteIP, RemoteUrl) pair, by a 64-bit
// hash of its columns in a table of 8-byte slots (see slots), then compare
// the entry found with the columns. Keyed by the values themselves, Go's
// map hashed every string on its own and kept 112-byte slots (a 104-byte
// Tuple and its index) that miss the cache on ~250k tuples of a day.
type hashIndex struct {
	seed uint64
	// weak keeps three bits of the hash: tests force collisions.
	weak bool
}

func newHashIndex(seed maphash.Seed) hashIndex {
	return hashIndex{seed: maphash.Comparable(seed, 0) | 1}
}

// mix folds the string s into the hash h eight bytes at a time, with its
// length, so that ("ab", "c") and ("a", "bc") differ. The hash only needs
// to spread keys: equality is always checked, and keys that collide are
// still told apart (spill), so a poor or attacked hash costs time, never
// a wrong answer.
func mix(h uint64, s string) uint64 {
	const m = 0x9e3779b97f4a7c15
	h = (h ^ uint64(len(s))) * m
	b := unsafe.Slice(unsafe.StringData(s), len(s))
	for len(b) >= 8 {
		h = (h ^ binary.LittleEndian.Uint64(b)) * m
		h ^= h >> 32
		b = b[8:]
	}
	if len(b) > 0 {
		var w uint64
		for i, c := range b {
			w |= uint64(c) << (8 * i)
		}
		h = (h ^ w) * m
		h ^= h >> 32
	}
	return h
}

func (x *hashIndex) final(h uint64) uint64 {
	h ^= h >> 29
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 32
	if x.weak {
		h &= 7
	}
	return h
}

// tupleHash hashes the seven columns of t.
func (x *hashIndex) tupleHash(t *Tuple) uint64 {
	h := mix(x.seed, t.DeviceId)
	h = mix(h, t.DeviceName)
	h = mix(h, t.AccountName)
	h = mix(h, t.AccountDomain)
	h = mix(h, t.FileName)
	h = mix(h, t.RemoteIP)
	return x.final(h ^ uint64(uint32(t.RemotePort)))
}

// pairHash hashes a (RemoteIP, RemoteUrl).
func (x *hashIndex) pairHash(ip, url string) uint64 {
	return x.final(mix(mix(x.seed, ip), url))
}

// slots is an open-addressing table of positions: each slot holds 32
// bits of a key's hash and its position + 1 (0 is an empty slot), found
// by linear probing from the hash's low bits. A slot whose bits match is
// checked against the entry; one that does not is passed over, so keys
// that share bits (or a whole hash) are kept apart without a second map.
// One slot is 8 bytes: a probe is usually one cache line.
type slots struct {
	s    []uint64
	n    int
	mask uint64
}

func (t *slots) grow(hashes func(yield func(uint64, int32) bool)) {
	size := max(1024, 2*len(t.s))
	t.s, t.mask = make([]uint64, size), uint64(size-1)
	for h, i := range hashes {
		t.put(h, i)
	}
}

func (t *slots) put(h uint64, i int32) {
	for j := h & t.mask; ; j = (j + 1) & t.mask {
		if t.s[j] == 0 {
			t.s[j] = h>>32<<32 | uint64(uint32(i)+1)
			return
		}
	}
}

// tupleIndex returns the position of t in h.tuples, adding it (with its
// strings interned) when it is new.
func (h *shard) tupleIndex(t *Tuple) int32 {
	k := h.hx.tupleHash(t)
	x := &h.index
	if 2*(x.n+1) > len(x.s) {
		x.grow(func(yield func(uint64, int32) bool) {
			for i, k := range h.tupleHashes {
				yield(k, int32(i))
			}
		})
	}
	tag := k >> 32 << 32
	for j := k & x.mask; ; j = (j + 1) & x.mask {
		e := x.s[j]
		if e == 0 {
			i := int32(len(h.tuples))
			h.tuples = append(h.tuples, Tuple{h.intern(t.DeviceId), h.intern(t.DeviceName), h.intern(t.AccountName),
				h.intern(t.AccountDomain), h.intern(t.FileName), h.intern(t.RemoteIP), t.RemotePort})
			h.tupleHashes = append(h.tupleHashes, k)
			x.s[j] = tag | uint64(uint32(i)+1)
			x.n++
			return i
		}
		if e&^0xffffffff == tag {
			if i := int32(uint32(e) - 1); h.tuples[i] == *t {
				return i
			}
		}
	}
}

// addDomain keeps the newest Timestamp of the event's (RemoteIP,
// RemoteUrl).
func (h *shard) addDomain(e *Event) {
	k := h.hx.pairHash(e.RemoteIP, e.RemoteUrl)
	x := &h.urlIndex
	if 2*(x.n+1) > len(x.s) {
		x.grow(func(yield func(uint64, int32) bool) {
			for i := range h.urlSeen {
				yield(h.urlSeen[i].hash, int32(i))
			}
		})
	}
	tag := k >> 32 << 32
	for j := k & x.mask; ; j = (j + 1) & x.mask {
		s := x.s[j]
		if s == 0 {
			x.s[j] = tag | uint64(uint32(len(h.urlSeen))+1)
			x.n++
			h.urlSeen = append(h.urlSeen, ipURL{h.intern(e.RemoteIP), cloneString(e.RemoteUrl), e.Timestamp, k})
			return
		}
		if s&^0xffffffff == tag {
			if u := &h.urlSeen[uint32(s)-1]; u.ip == e.RemoteIP && u.url == e.RemoteUrl {
				if e.Timestamp > u.newest {
					u.newest = e.Timestamp
				}
				return
			}
		}
	}
}
