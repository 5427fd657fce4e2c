package fleet

import (
	"fmt"
	"time"
)

// Implant frameworks and their sleep/jitter rules. A callback follows the
// previous one after a gap drawn uniformly (in 100 ns ticks) from:
//
//	cobaltstrike  [sleep − jitter·sleep, sleep]           jitter is a fraction
//	sliver        [sleep, sleep + jitter]                 jitter is seconds
//	empire        [sleep − jitter·sleep, sleep + jitter·sleep]
//	mythic        [sleep − jitter·sleep, sleep + jitter·sleep]
//
// Benign timers (updaters, fleet services) use the empire rule and report
// framework "".
const (
	CobaltStrike = "cobaltstrike"
	Sliver       = "sliver"
	Empire       = "empire"
	Mythic       = "mythic"
)

// Frameworks lists the implant frameworks the simulator knows.
var Frameworks = []string{CobaltStrike, Sliver, Empire, Mythic}

// Config describes a simulated fleet. The zero value of every field but
// Seed means its default (see DefaultConfig); for the counts and the sensor
// rates a negative value means none.
type Config struct {
	// Seed selects the fleet (any value, 0 included). The same Config gives
	// the same events, byte for byte, on every run.
	Seed int64
	// Devices in the fleet (default 200). About 5 % are servers, which do
	// not browse.
	Devices int
	// Start of the simulated period (default 2024-05-01T00:00:00Z, a
	// Wednesday) and its length (default 24h). Events have
	// Start ≤ Timestamp < Start+Duration.
	Start    time.Time
	Duration time.Duration
	// Implants planted (default 5), each a C2 beacon from one device to its
	// own server.
	Implants int
	// Updaters is how many benign periodic products (TeamViewer, Google
	// Update…) are installed, each on 1 to 5 devices (default 4). They are
	// beacons that a detector will rightly flag and an analyst will dismiss.
	Updaters int
	// Frameworks the implants are drawn from, round robin over a shuffled
	// copy (default all four).
	Frameworks []string
	// Sleeps the implants are drawn from, round robin over a shuffled copy
	// (default 5s, 30s, 1m, 5m, 10m, 15m, 30m, 1h, 4h).
	Sleeps []time.Duration
	// DropRate is the probability that the sensor never logs a connection
	// (default 0.01).
	DropRate float64
	// DupRate is the probability that the sensor logs a connection twice,
	// at the same timestamp or a few milliseconds later (default 0.002).
	DupRate float64
	// LateRate is the probability that an event is emitted late, up to
	// MaxLate after its Timestamp (defaults 0.005 and 90s).
	LateRate float64
	MaxLate  time.Duration
	// Traits, when not empty, are dealt to the implants round robin
	// (traits.go): bursts, a dead C2, working hours, a sleep change, IPv6,
	// aggregated reports, a CDN others poll, long sleeps, near-duplicates,
	// dropped callbacks. Empty (the default) plants clean timers.
	Traits []string
}

// DefaultStart is the default start of the simulated period.
var DefaultStart = time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)

// DefaultConfig returns the defaults, with seed 1.
func DefaultConfig() Config {
	return Config{
		Seed:       1,
		Devices:    200,
		Start:      DefaultStart,
		Duration:   24 * time.Hour,
		Implants:   5,
		Updaters:   4,
		Frameworks: append([]string(nil), Frameworks...),
		Sleeps: []time.Duration{5 * time.Second, 30 * time.Second, time.Minute, 5 * time.Minute,
			10 * time.Minute, 15 * time.Minute, 30 * time.Minute, time.Hour, 4 * time.Hour},
		DropRate: 0.01,
		DupRate:  0.002,
		LateRate: 0.005,
		MaxLate:  90 * time.Second,
	}
}

// withDefaults fills zero fields and turns negative counts and rates into 0.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Devices == 0 {
		c.Devices = d.Devices
	}
	if c.Start.IsZero() {
		c.Start = d.Start
	}
	if c.Duration == 0 {
		c.Duration = d.Duration
	}
	fill := func(v *int, def int) {
		switch {
		case *v == 0:
			*v = def
		case *v < 0:
			*v = 0
		}
	}
	fill(&c.Implants, d.Implants)
	fill(&c.Updaters, d.Updaters)
	if len(c.Frameworks) == 0 {
		c.Frameworks = d.Frameworks
	}
	if len(c.Sleeps) == 0 {
		c.Sleeps = d.Sleeps
	}
	rate := func(v *float64, def float64) {
		switch {
		case *v == 0:
			*v = def
		case *v < 0:
			*v = 0
		}
	}
	rate(&c.DropRate, d.DropRate)
	rate(&c.DupRate, d.DupRate)
	rate(&c.LateRate, d.LateRate)
	if c.MaxLate <= 0 {
		c.MaxLate = d.MaxLate
	}
	return c
}

// The bounds Validate holds a Config to. They are exported so that a
// command line that maps its flags to a Config can name the same range
// where its mapping hides a value (a zero that Config reads as "default").
const (
	MaxDevices  = 1_000_000
	MinDuration = time.Second
	MaxDuration = 10 * 365 * 24 * time.Hour // 87600h
	MaxImplants = 100_000
	MinSleep    = time.Second
)

// Validate reports a configuration that cannot be simulated, naming the
// valid range. New calls it; zero fields are checked as their defaults
// and negative counts and rates as none.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.Devices < 1 || c.Devices > MaxDevices:
		return fmt.Errorf("devices must be in [1, %d], got %d", MaxDevices, c.Devices)
	case c.Duration < MinDuration || c.Duration > MaxDuration:
		return fmt.Errorf("duration must be in [%s, %s], got %s", MinDuration, MaxDuration, c.Duration)
	case c.Start.Year() < 1900 || c.Start.Add(c.Duration).Year() > 9999:
		return fmt.Errorf("start %s is out of range: the period must lie in the years [1900, 9999]", c.Start.Format(time.RFC3339))
	case c.Implants > MaxImplants:
		return fmt.Errorf("implants must be in [0, %d], got %d", MaxImplants, c.Implants)
	case c.Updaters > len(updaterCatalog):
		return fmt.Errorf("updaters must be in [0, %d], got %d", len(updaterCatalog), c.Updaters)
	}
	for _, r := range []struct {
		name string
		v    float64
	}{{"drop", c.DropRate}, {"dup", c.DupRate}, {"late", c.LateRate}} {
		if r.v >= 1 || r.v != r.v {
			return fmt.Errorf("%s rate must be in [0, 1), got %v", r.name, r.v)
		}
	}
	for _, f := range c.Frameworks {
		if !knownFramework(f) {
			return fmt.Errorf("unknown framework %q (want one of %v)", f, Frameworks)
		}
	}
	if err := validateTraits(c.Traits); err != nil {
		return err
	}
	for _, s := range c.Sleeps {
		if s < MinSleep {
			return fmt.Errorf("implant sleeps must be at least %s, got %s", MinSleep, s)
		}
	}
	return nil
}

func knownFramework(f string) bool {
	for _, k := range Frameworks {
		if f == k {
			return true
		}
	}
	return false
}
