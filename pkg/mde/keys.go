package mde

import (
	"encoding/binary"
	"unsafe"
)

// col is a key the decoder knows: a DeviceNetworkEvents column it reads,
// a key of a container, or a column it skips. Keys are told apart by the
// first eight bytes after the quote, read as one word, then confirmed
// with one comparison: no scan for the closing quote, no string switch.
type col uint8

const (
	colOther col = iota // any other key: scanned and switched on (colOf)
	colTimestamp
	colDeviceId
	colDeviceName
	colActionType
	colRemoteIP
	colRemoteIPType
	colRemotePort
	colRemoteUrl
	colAccountName
	colAccountDomain
	colFileName
	colSHA256
	colSHA1
	colFolderPath
	colCommandLine
	colProcessId
	colReportId
	colAdditionalFields
	colRecords
	colResultsUpper
	colResults
	colProperties
	colBody
	colTenantId
	colCategory
	colType
	// Known columns the decoder never reads: found fast, then skipped.
	colTime
	colOperationName
	colLocalIP
	colLocalPort
	colProtocol
	numCols
)

var colNames = [numCols]string{
	colTimestamp:        "Timestamp",
	colDeviceId:         "DeviceId",
	colDeviceName:       "DeviceName",
	colActionType:       "ActionType",
	colRemoteIP:         "RemoteIP",
	colRemoteIPType:     "RemoteIPType",
	colRemotePort:       "RemotePort",
	colRemoteUrl:        "RemoteUrl",
	colAccountName:      "InitiatingProcessAccountName",
	colAccountDomain:    "InitiatingProcessAccountDomain",
	colFileName:         "InitiatingProcessFileName",
	colSHA256:           "InitiatingProcessSHA256",
	colSHA1:             "InitiatingProcessSHA1",
	colFolderPath:       "InitiatingProcessFolderPath",
	colCommandLine:      "InitiatingProcessCommandLine",
	colProcessId:        "InitiatingProcessId",
	colReportId:         "ReportId",
	colAdditionalFields: "AdditionalFields",
	colRecords:          "records",
	colResultsUpper:     "Results",
	colResults:          "results",
	colProperties:       "properties",
	colBody:             "body",
	colTenantId:         "tenantId",
	colCategory:         "category",
	colType:             "Type",
	colTime:             "time",
	colOperationName:    "operationName",
	colLocalIP:          "LocalIP",
	colLocalPort:        "LocalPort",
	colProtocol:         "Protocol",
}

// colOf maps a whole (unescaped) key to its col: the slow path, for keys
// guessCol does not know or that have escapes.
func colOf(key []byte) col {
	switch string(key) {
	case "Timestamp":
		return colTimestamp
	case "DeviceId":
		return colDeviceId
	case "DeviceName":
		return colDeviceName
	case "ActionType":
		return colActionType
	case "RemoteIP":
		return colRemoteIP
	case "RemoteIPType":
		return colRemoteIPType
	case "RemotePort":
		return colRemotePort
	case "RemoteUrl":
		return colRemoteUrl
	case "InitiatingProcessAccountName":
		return colAccountName
	case "InitiatingProcessAccountDomain":
		return colAccountDomain
	case "InitiatingProcessFileName":
		return colFileName
	case "InitiatingProcessSHA256":
		return colSHA256
	case "InitiatingProcessSHA1":
		return colSHA1
	case "InitiatingProcessFolderPath":
		return colFolderPath
	case "InitiatingProcessCommandLine":
		return colCommandLine
	case "InitiatingProcessId":
		return colProcessId
	case "ReportId":
		return colReportId
	case "AdditionalFields":
		return colAdditionalFields
	case "records":
		return colRecords
	case "Results":
		return colResultsUpper
	case "results":
		return colResults
	case "properties":
		return colProperties
	case "body":
		return colBody
	case "tenantId":
		return colTenantId
	case "category":
		return colCategory
	case "Type":
		return colType
	case "time":
		return colTime
	case "operationName":
		return colOperationName
	case "LocalIP":
		return colLocalIP
	case "LocalPort":
		return colLocalPort
	case "Protocol":
		return colProtocol
	}
	return colOther
}

// The first eight bytes of the known keys (with the closing quote for
// seven-letter keys, and a five-byte mask for four-letter ones), little
// endian; TestKeyWords checks them against colNames.
const (
	wTimestam = 0x6d617473656d6954
	wDeviceId = 0x6449656369766544
	wDeviceNa = 0x614e656369766544
	wActionTy = 0x79546e6f69746341
	wRemoteIP = 0x504965746f6d6552
	wRemotePo = 0x6f5065746f6d6552
	wRemoteUr = 0x725565746f6d6552
	wInitiati = 0x6974616974696e49
	wAddition = 0x6e6f697469646441
	wReportId = 0x644974726f706552
	wRecords  = 0x227364726f636572 // records"
	wResultsU = 0x2273746c75736552 // Results"
	wResults  = 0x2273746c75736572 // results"
	wProperti = 0x69747265706f7270
	wTenantId = 0x6449746e616e6574
	wCategory = 0x79726f6765746163
	wLocalIP  = 0x2250496c61636f4c // LocalIP"
	wLocalPor = 0x726f506c61636f4c
	wProtocol = 0x6c6f636f746f7250
	wOperatio = 0x6f6974617265706f
	w5Time    = 0x22656d6974 // time"
	w5Type    = 0x2265707954 // Type"
)

// guessCol names the key that starts at b[i] (after its quote) when it
// is one of the known ones, from its first word; colOther otherwise. The
// caller confirms the whole key.
func guessCol(b []byte, i int) col {
	w := binary.LittleEndian.Uint64(b[i:])
	switch w {
	case wTimestam:
		return colTimestamp
	case wDeviceId:
		return colDeviceId
	case wDeviceNa:
		return colDeviceName
	case wActionTy:
		return colActionType
	case wRemoteIP:
		if i+8 < len(b) && b[i+8] == 'T' {
			return colRemoteIPType
		}
		return colRemoteIP
	case wRemotePo:
		return colRemotePort
	case wRemoteUr:
		return colRemoteUrl
	case wInitiati:
		// InitiatingProcess is 17 bytes; the 18th tells most apart.
		if i+19 >= len(b) {
			return colOther
		}
		switch b[i+17] {
		case 'F':
			if b[i+18] == 'i' {
				return colFileName
			}
			return colFolderPath
		case 'A':
			if i+24 < len(b) && b[i+24] == 'N' {
				return colAccountName
			}
			return colAccountDomain
		case 'S':
			if i+21 < len(b) && b[i+21] == '"' {
				return colSHA1
			}
			return colSHA256
		case 'C':
			return colCommandLine
		case 'I':
			return colProcessId
		}
		return colOther
	case wAddition:
		return colAdditionalFields
	case wReportId:
		return colReportId
	case wRecords:
		return colRecords
	case wResultsU:
		return colResultsUpper
	case wResults:
		return colResults
	case wProperti:
		return colProperties
	case wTenantId:
		return colTenantId
	case wCategory:
		return colCategory
	case wLocalIP:
		return colLocalIP
	case wLocalPor:
		return colLocalPort
	case wProtocol:
		return colProtocol
	case wOperatio:
		return colOperationName
	}
	switch w & 0xff_ffff_ffff {
	case w5Time:
		return colTime
	case w5Type:
		return colType
	}
	return colOther
}

// colTails are the words of each known key past its first eight bytes
// (guessCol's word): at 8, 16 and len-8, overlapping, as many as cover it.
var colTails = func() (t [numCols][]tailWord) {
	for c := colTimestamp; c < numCols; c++ {
		n := colNames[c]
		for off := 8; off < len(n); off += 8 {
			off := min(off, len(n)-8)
			t[c] = append(t[c], tailWord{off, binary.LittleEndian.Uint64([]byte(n[off:]))})
		}
	}
	return t
}()

type tailWord struct {
	off int
	w   uint64
}

// tailMatches tells whether key, as long as colNames[c] and with the same
// first word, is that name.
func tailMatches(key []byte, c col) bool {
	for _, t := range colTails[c] {
		if binary.LittleEndian.Uint64(key[t.off:]) != t.w {
			return false
		}
	}
	return true
}

// keyCol reads "key" and the colon after it, leaves d at the value, and
// returns the key's col. Known keys without escapes take the fast path;
// any other key is scanned (and unescaped) by key and looked up by colOf.
func (d *decoder) keyCol() (col, error) {
	b, i := d.b, d.i
	if i+10 <= len(b) && b[i] == '"' {
		if c := guessCol(b, i+1); c != colOther {
			end := i + 1 + len(colNames[c])
			if end+1 < len(b) && b[end] == '"' && b[end+1] == ':' && tailMatches(b[i+1:end], c) {
				d.i = end + 2
				if d.i < len(b) && b[d.i] > ' ' {
					return c, nil
				}
				d.ws()
				if d.i >= len(d.b) {
					return c, d.errf("want a value")
				}
				return c, nil
			}
		}
	}
	key, err := d.key()
	if err != nil {
		return colOther, err
	}
	return colOf(key), nil
}

// templates are the key sequences of the last object seen at each depth:
// Defender's rows and records repeat one producer's key order, so the
// next key is predicted and confirmed with one comparison of its bytes,
// "Key": included, instead of being found by guessCol and tailMatches.
// A key is a function of its bytes, so a confirmed prediction is the col
// keyCol would give; a miss takes keyCol and learns the key. Six depths
// cover an envelope's properties (object 1, records 2, record 3,
// properties 4) and an array of envelopes.
type templates [6][]tmplKey

type tmplKey struct {
	raw string // "Key": as it appears, no escapes or spaces
	c   col
	// raw as words at offsets 0, 8, 16, 24 and len-8 (overlapping), when
	// it is at least eight bytes: compared inline, without a call.
	w  [5]uint64
	nw int
	// What fastKeys does with the value, without and with QueryOnly.
	act [2]keyAct
	// For a key of fewer than eight bytes, w[0] is raw and mask selects
	// its bytes of a word read at the key.
	mask uint64
	off  uintptr // stringCols[c]: where fastKeys stores a string column
	// The last value of a record's tenantId or category (a copy), tried
	// first, and whether it is DeviceNetworkEvents's category
	// (isNetworkCategory).
	last    string
	lastNet bool
}

// maxLast is the longest value a tmplKey keeps as its last.
const maxLast = 64

// keyAct is what fastKeys does with a key's value (see actOf).
type keyAct uint8

const (
	actBail      keyAct = iota // leave the key to the object's loop
	actString                  // a string column (stringCols)
	actTimestamp               // Timestamp
	actPort                    // RemotePort
	actTenant                  // tenantId: stored in a record, skipped in a row
	actCategory                // category or Type: the same
	actContainer               // records, results, properties: the object's loop in a record, skipped in a row
	actSkip                    // a key the decoder skips
)

// actOf is the action for a key's value: what the object's loop and
// column do with it, for the common value.
func actOf(c col, queryOnly bool) keyAct {
	if stringCols[c] != 0 && !(queryOnly && optionalCol[c]) {
		return actString
	}
	switch c {
	case colTimestamp:
		return actTimestamp
	case colRemotePort:
		return actPort
	case colTenantId:
		return actTenant
	case colCategory, colType:
		return actCategory
	case colRecords, colResultsUpper, colResults, colProperties, colBody:
		return actContainer
	case colAdditionalFields:
		return actBail
	case colProcessId, colReportId:
		if !queryOnly {
			return actBail
		}
	}
	return actSkip // colOther, the known keys that are skipped, optional columns left out
}

func newTmplKey(raw []byte, c col) tmplKey {
	t := tmplKey{raw: string(raw), c: c, act: [2]keyAct{actOf(c, false), actOf(c, true)}, off: stringCols[c]}
	if n := len(raw); n < 8 {
		var w, m [8]byte
		copy(w[:], raw)
		copy(m[:n], "\xff\xff\xff\xff\xff\xff\xff")
		t.w[0], t.mask = load64(unsafe.Pointer(&w[0]), 0), load64(unsafe.Pointer(&m[0]), 0)
	} else if n <= 8*len(t.w) {
		for off := 0; off < n; off += 8 {
			o := uintptr(min(off, n-8))
			t.w[t.nw] = load64(unsafe.Pointer(&raw[0]), o)
			t.nw++
		}
	}
	return t
}

// load64 reads the eight bytes at p+off as a word (in the machine's byte
// order; keys and input are read alike, so only equality matters).
func load64(p unsafe.Pointer, off uintptr) uint64 { return *(*uint64)(unsafe.Add(p, off)) }

// is tells whether b[i:] starts with the key and a value may follow: the
// first and last words first (most misses differ there), then the middle.
func (t *tmplKey) is(b []byte, i int) bool {
	n := len(t.raw)
	if i < 0 || i+n >= len(b) {
		return false
	}
	if t.nw == 0 {
		return string(b[i:i+n]) == t.raw
	}
	p := unsafe.Pointer(&b[i]) // b[i : i+n] is in bounds: the offsets are below n-7
	if load64(p, 0) != t.w[0] || load64(p, uintptr(n-8)) != t.w[t.nw-1] {
		return false
	}
	for k := 1; k < t.nw-1; k++ {
		if load64(p, uintptr(8*k)) != t.w[k] {
			return false
		}
	}
	return true
}

// keyAt is keyCol for the k-th key of an object.
func (d *decoder) keyAt(k int) (col, error) {
	t := d.tmpl
	if t == nil || d.depth >= len(t) {
		return d.keyCol()
	}
	if ks := t[d.depth]; k < len(ks) {
		if e := &ks[k]; e.is(d.b, d.i) {
			d.i += len(e.raw)
			if d.b[d.i] > ' ' {
				return e.c, nil
			}
			d.ws()
			if d.i >= len(d.b) {
				return e.c, d.errf("want a value")
			}
			return e.c, nil
		}
	}
	return d.learnKey(k)
}

// learnKey is keyAt's miss: keyCol, and the key learnt when it is plain
// (a quote, no escape, a quote, a colon). Out of line, so that keyAt's
// hit stays small.
//
//go:noinline
func (d *decoder) learnKey(k int) (col, error) {
	b, i := d.b, d.i
	c, err := d.keyCol()
	if err != nil || k > 64 {
		return c, err
	}
	ks := &d.tmpl[d.depth]
	if j := scanPlain(b, i+1); j+1 < len(b) && b[j] == '"' && b[j+1] == ':' {
		raw := b[i : j+2]
		if k < len(*ks) {
			if (*ks)[k].raw != string(raw) {
				(*ks)[k] = newTmplKey(raw, c)
			}
		} else if k == len(*ks) {
			*ks = append(*ks, newTmplKey(raw, c))
		}
	}
	return c, nil
}
