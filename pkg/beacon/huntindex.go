package beacon

import (
	"encoding/binary"
	"hash/maphash"
	"math/bits"
	"strconv"
	"unsafe"
)

// Hunt's adders find a RemoteIP, a who, a tuple and a (RemoteIP,
// RemoteUrl) pair by a 64-bit hash of its columns in a table of 8-byte
// slots (see slots), then compare the entry found with the columns. Keyed
// by the values themselves, Go's map hashed every string on its own and
// kept 112-byte slots (a 104-byte Tuple and its index) that miss the cache
// on ~250k tuples of a day.
type hashIndex struct {
	seed uint64
	// weak keeps three bits of the hash: tests force collisions.
	weak bool
}

func newHashIndex(seed maphash.Seed) hashIndex {
	return hashIndex{seed: maphash.Comparable(seed, 0) | 1}
}

// mix folds the string s into the hash h. The hash only needs to spread
// keys: equality is always checked, and keys that collide are still told
// apart (spill), so a poor or attacked hash costs time, never a wrong
// answer. maphash takes the length in, so ("ab", "c") and ("a", "bc")
// differ.
func (x *hashIndex) mix(h uint64, s string) uint64 {
	return strHash(h, s)
}

// The constants of wyhash (final version 4).
const (
	wy0 = 0xa0761d6478bd642f
	wy1 = 0xe7037ed1a0b428db
)

func wymix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// strHash hashes s from seed: wyhash without its three-lane loop for
// long keys (the strings here are short). It reads s eight bytes at a
// time — overlapping at the end, never past it — inline where
// maphash.String was three calls a who (hash/maphash's AES hash is as
// good, but its call, its seed handling and its dispatch on the length
// cost more than hashing 40 bytes). The length is mixed in.
func strHash(seed uint64, s string) uint64 {
	n := len(s)
	p := unsafe.Pointer(unsafe.StringData(s))
	seed ^= wymix(seed^wy0, wy1)
	var a, b uint64
	switch {
	case n > 16:
		i := 0
		for ; n-i > 16; i += 16 {
			seed = wymix(load64at(p, i)^wy1, load64at(p, i+8)^seed)
		}
		a, b = load64at(p, n-16), load64at(p, n-8)
	case n >= 8:
		a, b = load64at(p, 0), load64at(p, n-8)
	case n >= 4:
		a = uint64(load32at(p, 0))<<32 | uint64(load32at(p, n-4))
	case n > 0:
		a = uint64(*(*byte)(p))<<16 | uint64(*(*byte)(unsafe.Add(p, n>>1)))<<8 | uint64(*(*byte)(unsafe.Add(p, n-1)))
	}
	hi, lo := bits.Mul64(a^wy1, b^seed)
	return wymix(lo^wy0^uint64(n), hi^wy1)
}

// load64at and load32at read the little-endian word at p+i.
func load64at(p unsafe.Pointer, i int) uint64 {
	return binary.LittleEndian.Uint64(unsafe.Slice((*byte)(unsafe.Add(p, i)), 8))
}

func load32at(p unsafe.Pointer, i int) uint32 {
	return binary.LittleEndian.Uint32(unsafe.Slice((*byte)(unsafe.Add(p, i)), 4))
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

// whoHash hashes a who by DeviceId, account and file name and the
// lengths of the other two: a DeviceName follows its DeviceId and an
// account's domain its name, so hashing them too would spread the keys
// little more, and equality is checked on all five anyway.
func (x *hashIndex) whoHash(dev, name, acct, dom, file string) uint64 {
	h := x.mix(x.seed^uint64(len(name))<<32^uint64(len(dom)), dev)
	h = x.mix(h, acct)
	return x.final(x.mix(h, file))
}

// bucket picks a tuple's bucket from the hashes of its who and address
// (the same in every adder) and its port.
func (x *hashIndex) bucket(who, ip uint64, port int32) int {
	const m = 0x9e3779b97f4a7c15
	h := (who ^ ip*m ^ uint64(uint32(port))) * m
	h ^= h >> 29
	h *= 0xbf58476d1ce4e5b9
	return int(h >> (64 - 8)) // numBuckets = 1<<8
}

// v4Hash hashes an IPv4 address kept by its value.
func (x *hashIndex) v4Hash(v uint32) uint64 {
	return x.final((x.seed ^ uint64(v)) * 0x9e3779b97f4a7c15)
}

// canonicalIPv4 reads s when it is an IPv4 address as formatIPv4 writes
// it: four decimal octets up to 255 without leading zeros, nothing else.
// Such a string and its value determine each other, so Hunt keys it by
// the value; every other spelling (01.2.3.4, 1.2.3.4/24, IPv6) is kept
// as a string.
func canonicalIPv4(s string) (uint32, bool) {
	if len(s) < 7 || len(s) > 15 {
		return 0, false
	}
	// Octet by octet, with its digits unrolled: a first digit, then up to
	// two more unless the first was 0 (no leading zeros); anything after
	// an octet but a dot (or the end after the fourth) fails, a fourth
	// digit included.
	var a uint32
	i := 0
	for k := range 4 {
		if k > 0 {
			if i >= len(s) || s[i] != '.' {
				return 0, false
			}
			i++
		}
		if i >= len(s) {
			return 0, false
		}
		v := uint32(s[i]) - '0'
		if v > 9 {
			return 0, false
		}
		i++
		if v != 0 && i < len(s) {
			if d := uint32(s[i]) - '0'; d <= 9 {
				v, i = v*10+d, i+1
				if i < len(s) {
					if d := uint32(s[i]) - '0'; d <= 9 {
						v, i = v*10+d, i+1
					}
				}
			}
		}
		if v > 255 {
			return 0, false
		}
		a = a<<8 | v
	}
	return a, i == len(s)
}

// formatIPv4 writes an address in dotted-quad form.
func formatIPv4(v uint32) string {
	b := make([]byte, 0, 15)
	for k := 3; k >= 0; k-- {
		b = strconv.AppendUint(b, uint64(v>>(8*k)&0xff), 10)
		if k > 0 {
			b = append(b, '.')
		}
	}
	return string(b)
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

// find probes t for hash k and returns the position eq accepts, or the
// empty slot to fill (j) and -1. It grows t first when it is half full,
// with rehash giving every entry's hash.
func (t *slots) find(k uint64, eq func(int32) bool) (j uint64, i int32) {
	tag := k >> 32 << 32
	for j = k & t.mask; ; j = (j + 1) & t.mask {
		e := t.s[j]
		if e == 0 {
			return j, -1
		}
		if e&^0xffffffff == tag {
			if i := int32(uint32(e) - 1); eq(i) {
				return j, i
			}
		}
	}
}

// fill records position i for hash k in the empty slot j that find gave.
func (t *slots) fill(j, k uint64, i int32) {
	t.s[j] = k>>32<<32 | uint64(uint32(i)+1)
	t.n++
}

// room grows t, when it is half full, before one more entry.
func (t *slots) room(hashes func(yield func(uint64, int32) bool)) {
	if 2*(t.n+1) > len(t.s) {
		t.grow(hashes)
	}
}

// keyOfIP returns s as an ipKey.
func keyOfIP(s string) ipKey {
	if len(s) > 16 {
		return ipKey{n: -1}
	}
	var w [2]uint64
	for i := 0; i < len(s); i++ {
		w[i>>3] |= uint64(s[i]) << (8 * (i & 7))
	}
	return ipKey{w[0], w[1], len(s)}
}

// ipHash hashes an address from its key (or its bytes when long).
func (x *hashIndex) ipHash(k ipKey, s string) uint64 {
	if k.n < 0 {
		return x.final(x.mix(x.seed, s))
	}
	const m = 0x9e3779b97f4a7c15
	h := (x.seed ^ k.w0) * m
	h ^= h >> 32
	h = (h ^ k.w1 ^ uint64(k.n)<<56) * m
	return x.final(h)
}

// ip returns the index of RemoteIP s, adding it (copied, with its
// DomainIP) when it is new.
func (a *adder) ip(s string) uint32 {
	key := keyOfIP(s)
	k := a.hx.ipHash(key, s)
	a.ipIndex.room(a.ipHashes)
	j, i := a.ipIndex.find(k, func(i int32) bool {
		if e := &a.ipKeys[i]; key.n >= 0 || e.n >= 0 {
			return *e == key
		}
		return a.ips[i].s == s
	})
	if i < 0 {
		i = int32(len(a.ips))
		a.ips = append(a.ips, ipEntry{cloneString(s), k, a.p.DomainIP(s)})
		a.ipKeys = append(a.ipKeys, key)
		a.ipIndex.fill(j, k, i)
	}
	return uint32(i)
}

// ipOf is ip for an entry of another adder (merge).
func (a *adder) ipOf(e *ipEntry) uint32 {
	a.ipIndex.room(a.ipHashes)
	j, i := a.ipIndex.find(e.hash, func(i int32) bool { return a.ips[i].s == e.s })
	if i < 0 {
		i = int32(len(a.ips))
		a.ips = append(a.ips, *e)
		a.ipKeys = append(a.ipKeys, keyOfIP(e.s))
		a.ipIndex.fill(j, e.hash, i)
	}
	return uint32(i)
}

func (a *adder) ipHashes(yield func(uint64, int32) bool) {
	for i := range a.ips {
		yield(a.ips[i].hash, int32(i))
	}
}

// who returns the index of the who whose whoHash is k, adding it
// (copied) when it is new.
func (a *adder) who(k uint64, dev, name, acct, dom, file string) uint32 {
	a.whoIndex.room(a.whoHashes)
	j, i := a.whoIndex.find(k, func(i int32) bool { return a.whoIs(i, dev, name, acct, dom, file) })
	if i < 0 {
		i = int32(len(a.whos))
		a.addWho(newWho(dev, name, acct, dom, file, k))
		a.whoIndex.fill(j, k, i)
	}
	return uint32(i)
}

func (a *adder) addWho(w who) {
	a.whos = append(a.whos, w)
	a.whoKeys = append(a.whoKeys, keyOfWho(&w))
}

// robustWho is who for robust's tuple of e, whose names TupleOf lowers:
// e's names as spelled are looked up first, so each spelling is lowered
// once (TestHuntRobustSpellings).
func (a *adder) robustWho(e *Event) (uint32, uint64) {
	k := a.hx.whoHash(e.DeviceId, e.DeviceName, e.AccountName, e.AccountDomain, e.FileName)
	a.rawIndex.room(a.rawHashes)
	j, i := a.rawIndex.find(k, func(i int32) bool {
		w := &a.raws[i]
		return w.FileName == e.FileName && w.AccountName == e.AccountName && w.DeviceId == e.DeviceId &&
			w.DeviceName == e.DeviceName && w.AccountDomain == e.AccountDomain
	})
	if i >= 0 {
		wi := a.rawTo[i]
		return wi, a.whos[wi].hash
	}
	t := a.p.TupleOf(e)
	wh := a.hx.whoHash(t.DeviceId, t.DeviceName, t.AccountName, t.AccountDomain, t.FileName)
	wi := a.who(wh, t.DeviceId, t.DeviceName, t.AccountName, t.AccountDomain, t.FileName)
	a.rawIndex.fill(j, k, int32(len(a.raws)))
	a.raws = append(a.raws, newWho(e.DeviceId, e.DeviceName, e.AccountName, e.AccountDomain, e.FileName, k))
	a.rawTo = append(a.rawTo, wi)
	return wi, wh
}

func (a *adder) rawHashes(yield func(uint64, int32) bool) {
	for i := range a.raws {
		yield(a.raws[i].hash, int32(i))
	}
}

// whoKey is a who as newWho lays it out, its five strings one after
// another in one block, by the block and the lengths: 24 bytes a who, so
// that the table of them stays in cache and a compare touches the block
// only once the lengths match. A who not so laid out, or with a string
// longer than 65535 bytes, is compared by its strings (slow).
type whoKey struct {
	p    *byte
	n    [5]uint16
	slow bool
}

func keyOfWho(w *who) whoKey {
	k := whoKey{p: unsafe.StringData(w.DeviceId)}
	off := uintptr(0)
	for i, s := range [5]string{w.DeviceId, w.DeviceName, w.AccountName, w.AccountDomain, w.FileName} {
		// Addresses compared as integers: p+off may be one past the block.
		if len(s) > 0xffff || (len(s) > 0 && uintptr(unsafe.Pointer(unsafe.StringData(s))) != uintptr(unsafe.Pointer(k.p))+off) {
			k.slow = true
		}
		k.n[i] = uint16(len(s))
		off += uintptr(len(s))
	}
	if k.p == nil {
		k.slow = true
	}
	return k
}

// whoIs tells whether who i is (dev, name, acct, dom, file).
func (a *adder) whoIs(i int32, dev, name, acct, dom, file string) bool {
	k := &a.whoKeys[i]
	if k.slow {
		w := &a.whos[i]
		return w.DeviceId == dev && w.DeviceName == name && w.AccountName == acct && w.AccountDomain == dom && w.FileName == file
	}
	if int(k.n[0]) != len(dev) || int(k.n[1]) != len(name) || int(k.n[2]) != len(acct) || int(k.n[3]) != len(dom) || int(k.n[4]) != len(file) {
		return false
	}
	p := unsafe.Pointer(k.p)
	o1 := uintptr(len(dev))
	o2 := o1 + uintptr(len(name))
	o3 := o2 + uintptr(len(acct))
	o4 := o3 + uintptr(len(dom))
	eq := func(o uintptr, s string) bool {
		return s == "" || eqWords(unsafe.Add(p, o), s) // p+o may be one past the block when s is ""
	}
	return eq(0, dev) && eq(o4, file) && eq(o2, acct) && eq(o1, name) && eq(o3, dom)
}

// eqWords tells whether the len(s) bytes at p are s, with word loads (the
// last one overlapping) instead of a memequal call per string: a hit
// compares five.
func eqWords(p unsafe.Pointer, s string) bool {
	n := uintptr(len(s))
	q := unsafe.Pointer(unsafe.StringData(s))
	switch {
	case n >= 8:
		for o := uintptr(0); o+8 < n; o += 8 {
			if *(*uint64)(unsafe.Add(p, o)) != *(*uint64)(unsafe.Add(q, o)) {
				return false
			}
		}
		return *(*uint64)(unsafe.Add(p, n-8)) == *(*uint64)(unsafe.Add(q, n-8))
	case n >= 4:
		return *(*uint32)(p) == *(*uint32)(q) && *(*uint32)(unsafe.Add(p, n-4)) == *(*uint32)(unsafe.Add(q, n-4))
	}
	for o := uintptr(0); o < n; o++ {
		if *(*byte)(unsafe.Add(p, o)) != *(*byte)(unsafe.Add(q, o)) {
			return false
		}
	}
	return true
}

// newWho copies the five strings into one allocation: comparing a who on
// a hit then reads one or two cache lines, not five scattered ones.
func newWho(dev, name, acct, dom, file string, hash uint64) who {
	buf := make([]byte, 0, len(dev)+len(name)+len(acct)+len(dom)+len(file))
	part := func(s string) string {
		buf = append(buf, s...)
		return unsafe.String(unsafe.SliceData(buf[len(buf)-len(s):]), len(s))
	}
	if cap(buf) == 0 {
		return who{hash: hash}
	}
	return who{part(dev), part(name), part(acct), part(dom), part(file), hash}
}

// whoOf is who for an entry of another adder (merge).
func (a *adder) whoOf(e *who) uint32 {
	a.whoIndex.room(a.whoHashes)
	j, i := a.whoIndex.find(e.hash, func(i int32) bool {
		return a.whoIs(i, e.DeviceId, e.DeviceName, e.AccountName, e.AccountDomain, e.FileName)
	})
	if i < 0 {
		i = int32(len(a.whos))
		a.addWho(*e)
		a.whoIndex.fill(j, e.hash, i)
	}
	return uint32(i)
}

func (a *adder) whoHashes(yield func(uint64, int32) bool) {
	for i := range a.whos {
		yield(a.whos[i].hash, int32(i))
	}
}

// urlEntry is a distinct non-empty RemoteUrl and its hash.
type urlEntry struct {
	s    string
	hash uint64
}

// url returns the index of RemoteUrl s, adding it (copied) when it is
// new. The empty URL, about half of a day's events, is 0 without a probe.
func (a *adder) url(s string) uint32 {
	if s == "" {
		return 0
	}
	if len(a.urls) == 0 {
		a.urls = append(a.urls, urlEntry{}) // urls[0] is ""
	}
	k := a.hx.final(a.hx.mix(a.hx.seed, s))
	a.urlIndex.room(a.urlHashes)
	// Compared with word loads (eqWords), not a memequal call: half the
	// day's events find their URL.
	j, i := a.urlIndex.find(k, func(i int32) bool {
		u := a.urls[i].s
		return len(u) == len(s) && eqWords(unsafe.Pointer(unsafe.StringData(u)), s)
	})
	if i < 0 {
		i = int32(len(a.urls))
		a.urls = append(a.urls, urlEntry{cloneString(s), k})
		a.urlIndex.fill(j, k, i)
	}
	return uint32(i)
}

// urlOf is url for an entry of another adder (merge).
func (a *adder) urlOf(e *urlEntry) uint32 {
	if e.s == "" {
		return 0
	}
	if len(a.urls) == 0 {
		a.urls = append(a.urls, urlEntry{})
	}
	a.urlIndex.room(a.urlHashes)
	j, i := a.urlIndex.find(e.hash, func(i int32) bool { return a.urls[i].s == e.s })
	if i < 0 {
		i = int32(len(a.urls))
		a.urls = append(a.urls, *e)
		a.urlIndex.fill(j, e.hash, i)
	}
	return uint32(i)
}

func (a *adder) urlHashes(yield func(uint64, int32) bool) {
	for i := 1; i < len(a.urls); i++ {
		yield(a.urls[i].hash, int32(i))
	}
}

// urlString is the URL an index names.
func (a *adder) urlString(i uint32) string {
	if i == 0 {
		return ""
	}
	return a.urls[i].s
}

// pairLog is every public-IPv4 event's pair and time, in chunks of a
// fixed size: appending never copies what is there.
type pairLog struct {
	chunks [][]pairSeen
}

// pairSeen is an event's (RemoteIP, RemoteUrl) as the address's ipID and
// the URL's index, and its time, in 16 bytes: an ipID is 33 bits (a raw
// IPv4 address or an index, told apart by rawIPv4), so its low 32 are ip
// and its rawIPv4 bit is url's top bit (a URL's index is an int32's, never
// that large). 24 bytes with the ipID whole, a day's log was 17 MB of
// fresh heap pages, each faulted in and zeroed.
type pairSeen struct {
	t   Time
	ip  uint32
	url uint32
}

// pairRaw is pairSeen.url's bit for an ipID with rawIPv4 set.
const pairRaw = 1 << 31

func newPairSeen(ip ipID, t Time, url uint32) pairSeen {
	if ip&rawIPv4 != 0 {
		url |= pairRaw
	}
	return pairSeen{t, uint32(ip), url}
}

// id is the pair's ipID, urlIndex its URL's index.
func (u *pairSeen) id() ipID {
	if u.url&pairRaw != 0 {
		return rawIPv4 | ipID(u.ip)
	}
	return ipID(u.ip)
}

func (u *pairSeen) urlIndex() uint32 { return u.url &^ pairRaw }

// pairChunk is how many entries a chunk of a pairLog holds (512 KB).
const pairChunk = 1 << 15

func (l *pairLog) add(u pairSeen) {
	n := len(l.chunks)
	if n == 0 || len(l.chunks[n-1]) == pairChunk {
		l.chunks = append(l.chunks, make([]pairSeen, 0, pairChunk))
		n++
	}
	l.chunks[n-1] = append(l.chunks[n-1], u)
}
