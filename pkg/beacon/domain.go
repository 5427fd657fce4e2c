package beacon

import (
	"regexp"
	"strings"
)

// DomainOf is the query's enrichment of one RemoteUrl:
//
//	Host = tostring(parse_url(iif(RemoteUrl !startswith "http", strcat("http://", RemoteUrl), RemoteUrl)).Host)
//	domain = reverse(replace(@'([A-z0-9-]+\.[A-z0-9-]+\.[A-z0-9-]+)\..*', @'\1', reverse(Host)))
//
// startswith is case-insensitive in Kusto. The regex keeps the last three
// labels of a longer host; note that [A-z] also spans [ \ ] ^ _ and `.
func DomainOf(remoteURL string) string {
	u := remoteURL
	if !hasPrefixFold(u, "http") {
		u = "http://" + u
	}
	host := urlHost(u)
	if strings.Count(host, ".") < 3 {
		return host // fewer than four labels: the regex cannot match
	}
	rev := reverse(host)
	return reverse(lastThreeLabels.ReplaceAllString(rev, "$1"))
}

var lastThreeLabels = regexp.MustCompile(`([A-z0-9-]+\.[A-z0-9-]+\.[A-z0-9-]+)\..*`)

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// urlHost is parse_url(u).Host: the authority of scheme://authority/…
// without user info and port. A string that is not an absolute URL has no
// host (""), as parse_url gives an empty Host for it.
func urlHost(u string) string {
	i := strings.Index(u, "://")
	if i <= 0 || !validScheme(u[:i]) {
		return ""
	}
	auth := u[i+3:]
	if j := strings.IndexAny(auth, "/?#"); j >= 0 {
		auth = auth[:j]
	}
	if j := strings.LastIndexByte(auth, '@'); j >= 0 {
		auth = auth[j+1:]
	}
	if strings.HasPrefix(auth, "[") {
		if j := strings.IndexByte(auth, ']'); j >= 0 {
			return auth[:j+1]
		}
		return auth
	}
	if j := strings.LastIndexByte(auth, ':'); j >= 0 {
		auth = auth[:j]
	}
	return auth
}

func validScheme(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case i > 0 && (c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return false
		}
	}
	return true
}

// reverse reverses a string by characters, as Kusto's reverse().
func reverse(s string) string {
	r := []rune(s)
	for i, j := 0, len(r)-1; i < j; i, j = i+1, j-1 {
		r[i], r[j] = r[j], r[i]
	}
	return string(r)
}

// DomainIP reports whether a RemoteIP can ever be a beacon's, so that its
// domains are worth keeping: the Domains join is on RemoteIP, and only
// public IPv4 addresses pass the query's filters.
func DomainIP(ip string) bool {
	if ip == "" || ip == "0.0.0.0" {
		return false
	}
	priv, ok := IPv4IsPrivate(ip)
	return ok && !priv
}
