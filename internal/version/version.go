// Package version reads what the binary was built from (runtime/debug
// build info) once, for both places that say it: 'beacon version' and the
// product version every alert carries.
package version

import "runtime/debug"

// Build is the build info that matters to a reader of an alert or a bug
// report.
type Build struct {
	Module   string // the main module's version; "(devel)" for a build from a work tree
	Go       string // the Go release, e.g. go1.26.0
	Revision string // VCS revision, the first 12 hex digits; "" when not recorded
	Time     string // VCS commit time, RFC 3339; "" when not recorded
	Modified bool   // the work tree had uncommitted changes
	Known    bool   // false when the binary carries no build info
}

// Read returns the running binary's build info.
func Read() Build {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return Build{}
	}
	b := Build{Module: bi.Main.Version, Go: bi.GoVersion, Known: true}
	if b.Module == "" {
		b.Module = "(devel)"
	}
	for _, kv := range bi.Settings {
		switch kv.Key {
		case "vcs.revision":
			b.Revision = kv.Value[:min(12, len(kv.Value))]
		case "vcs.time":
			b.Time = kv.Value
		case "vcs.modified":
			b.Modified = kv.Value == "true"
		}
	}
	return b
}

// Product is the version alerts give: the module version, and the
// revision after a + when the build recorded one ("(devel)+0123456789ab").
func (b Build) Product() string {
	if !b.Known {
		return "unknown"
	}
	if len(b.Revision) == 12 {
		return b.Module + "+" + b.Revision
	}
	return b.Module
}

// String is the line 'beacon version' prints: "beacon MODULE GO", then the
// revision (+dirty for a modified tree) and its time when recorded.
func (b Build) String() string {
	if !b.Known {
		return "beacon (no build info)"
	}
	out := "beacon " + b.Module + " " + b.Go
	if b.Revision != "" {
		out += " " + b.Revision
		if b.Modified {
			out += "+dirty"
		}
		if b.Time != "" {
			out += " " + b.Time
		}
	}
	return out
}
