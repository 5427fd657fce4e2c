package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/beaconhunt/beacon/pkg/beacon"
	"github.com/beaconhunt/beacon/pkg/fleet"
)

// The default profiles. hunt keeps seed: it is what detection engineers
// compare with the query, row for row. run, replay and demo detect with
// robust, which catches the implants the query's semantics miss
// (docs/robust.md, "Acceptance"). The tests that compare replay with hunt
// pass --profile explicitly; the others ask streamProfile.
const (
	huntProfile   = beacon.ProfileSeed
	streamProfile = beacon.ProfileRobust
)

// profileParams returns the defaults of the profile that args select with
// --profile (def when they do not), so that the parameter flags registered
// next show and start from that profile's defaults. An unknown profile is
// reported by the flag itself, after parsing.
func profileParams(args []string, def string) beacon.Params {
	name := def
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			break
		}
		a = strings.TrimLeft(a, "-")
		if v, ok := strings.CutPrefix(a, "profile="); ok {
			name = v
		} else if a == "profile" && i+1 < len(args) {
			name = args[i+1]
		}
	}
	p, err := beacon.ProfileParams(name)
	if err != nil {
		p, _ = beacon.ProfileParams(def)
	}
	return p
}

// reprofile handles a profile chosen by the config file or the
// environment (profile: robust, BEACON_PROFILE): parsing started from the
// defaults of started (profileParams read the command line only), so when
// the profile in effect after layering, name, is another, it returns args
// with --profile=name in front for the caller to parse again, every
// parameter not set then starting from name's defaults. The command line's
// --profile, if any, is later in args and still wins.
func reprofile(args []string, started, name string) ([]string, bool) {
	want, err := beacon.ProfileParams(name)
	if err != nil {
		return nil, false // reported by checkProfile
	}
	from, _ := beacon.ProfileParams(started)
	if want.Profile == from.Profile {
		return nil, false
	}
	return append([]string{"--profile=" + name}, args...), true
}

// addProfileFlags registers --profile and the robust profile's own
// parameters; checkProfile validates the choice after parsing.
func addProfileFlags(fs *flag.FlagSet, p *beacon.Params, def string) *string {
	profile := fs.String("profile", def, "detection profile: seed (the query, quirks included) or robust (docs/robust.md)")
	r := &p.Robust
	fs.Float64Var(&r.Threshold, "threshold", r.Threshold, "robust: report tuples whose Score is at least this (0..1)")
	fs.Float64Var(&r.RareThreshold, "rare-threshold", r.RareThreshold, "robust: also report tuples scoring at least this whose device is the only one with a candidate on the destination (0..1)")
	fs.Int64Var(&r.MinCallbacks, "min-callbacks", r.MinCallbacks, "robust: a tuple needs at least this many callbacks")
	fs.Int64Var(&r.BurstGap, "burst-gap", r.BurstGap, "robust: connections at most this many seconds apart are one callback")
	return profile
}

// checkProfile reports an unknown profile and sets p.Profile.
func checkProfile(p *beacon.Params, name string) error {
	def, err := beacon.ProfileParams(name)
	if err != nil {
		return usagef("%v", err)
	}
	p.Profile = def.Profile
	if p.Profile == beacon.ProfileRobust {
		p.TotalEventsThresholdMin = min(p.TotalEventsThresholdMin, p.Robust.FirstCallbacks()-1)
	}
	return nil
}

// writeHuntScore scores hunt's rows against a labels file (`beacon simulate
// --labels`) with fleet.Score — label tuples formed as the profile forms
// tuples — and prints the scorecard and the implants caught per trait.
func writeHuntScore(w io.Writer, path string, p *beacon.Params, rows []beacon.Row) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	labels, err := fleet.ReadLabels(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	profileLabels(p, labels)
	dets := make([]fleet.Detection, len(rows))
	for i := range rows {
		dets[i] = fleet.Detection{Tuple: rows[i].Tuple, FirstAlert: rows[i].MaxTimestamp}
	}
	sc := fleet.Score(labels, dets)
	if err := sc.WriteTable(w); err != nil {
		return err
	}
	type count struct{ labelled, caught int }
	traits := map[string]*count{}
	var names []string
	for _, b := range sc.Beacons {
		if b.Label.Class != fleet.ClassImplant {
			continue
		}
		tr := b.Label.Trait
		if tr == "" {
			tr = "none"
		}
		c := traits[tr]
		if c == nil {
			c = &count{}
			traits[tr] = c
			names = append(names, tr)
		}
		c.labelled++
		if b.Detected {
			c.caught++
		}
	}
	slices.Sort(names)
	fmt.Fprintf(w, "\nimplants caught per trait:")
	for _, n := range names {
		fmt.Fprintf(w, " %s %d/%d", n, traits[n].caught, traits[n].labelled)
	}
	fmt.Fprintln(w)
	return nil
}

// profileLabels rewrites the labels' tuples as the profile forms tuples
// (robust lower-cases process and account names), so that they match the
// tuples of its rows and alerts.
func profileLabels(p *beacon.Params, labels []fleet.Label) []fleet.Label {
	for i := range labels {
		t := &labels[i].Tuple
		e := beacon.Event{DeviceId: t.DeviceId, DeviceName: t.DeviceName, AccountName: t.AccountName,
			AccountDomain: t.AccountDomain, FileName: t.FileName, RemoteIP: t.RemoteIP, RemotePort: t.RemotePort}
		*t = p.TupleOf(&e)
	}
	return labels
}

// applyAllowFile drops the rows an allow list matches and reports how many
// on w.
func applyAllowFile(path string, rows []beacon.Row, w io.Writer) ([]beacon.Row, error) {
	a, err := readAllowFile(path)
	if err != nil {
		return nil, err
	}
	rows, n := a.Filter(rows)
	fmt.Fprintf(w, "beacon: allow list %s (%d entries) suppressed %d row(s)\n", path, a.Len(), n)
	return rows, nil
}

// readAllowFile reads an allow list (--allow) from a file.
func readAllowFile(path string) (*beacon.AllowList, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return beacon.ReadAllowList(f, path)
}
