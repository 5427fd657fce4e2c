package beacon

// IPv4IsPrivate is Kusto's ipv4_is_private: whether s is an IPv4 address
// (optionally with a /prefix) in 10/8, 172.16/12 or 192.168/16. ok is false
// where Kusto returns null: for anything that is not IPv4, IPv6 included.
// The query's where not(...) drops those rows.
func IPv4IsPrivate(s string) (private, ok bool) {
	a, ok := parseIPv4(s)
	if !ok {
		return false, false
	}
	return ipv4Private(a), true
}

// ipv4Private tells whether a is in 10/8, 172.16/12 or 192.168/16.
func ipv4Private(a uint32) bool {
	return a>>24 == 10 || a>>20 == 172<<4|1 || a>>16 == 192<<8|168
}

// parseIPv4 parses dotted-quad IPv4 with an optional /0–/32 suffix.
func parseIPv4(s string) (uint32, bool) {
	var a uint32
	i := 0
	for part := 0; part < 4; part++ {
		if part > 0 {
			if i >= len(s) || s[i] != '.' {
				return 0, false
			}
			i++
		}
		v, digits := 0, 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' && digits < 4 {
			v = v*10 + int(s[i]-'0')
			i++
			digits++
		}
		if digits == 0 || digits > 3 || v > 255 {
			return 0, false
		}
		a = a<<8 | uint32(v)
	}
	if i == len(s) {
		return a, true
	}
	if s[i] != '/' {
		return 0, false
	}
	i++
	v, digits := 0, 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' && digits < 3 {
		v = v*10 + int(s[i]-'0')
		i++
		digits++
	}
	if digits == 0 || i != len(s) || v > 32 {
		return 0, false
	}
	return a, true
}

// DatetimeDiffSeconds is datetime_diff('second', a, b): the number of
// whole-second boundaries between b and a, i.e. floor(a) − floor(b) in
// seconds — not the elapsed time divided by a second.
func DatetimeDiffSeconds(a, b Time) int64 { return a.Seconds() - b.Seconds() }
