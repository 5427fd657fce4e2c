package fleet

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// Detection is a tuple a detector alerted on, with the stream time of its
// first alert.
type Detection struct {
	Tuple
	FirstAlert beacon.Time
}

// ClassUnlabelled is the class of detections on tuples with no label
// (browsing, background noise): false positives the simulator did not plan.
const ClassUnlabelled = "unlabelled"

// ClassScore counts one label class.
type ClassScore struct {
	Class    string `json:"class"`
	Labelled int    `json:"labelled"`
	Detected int    `json:"detected"`
	Missed   int    `json:"missed"`
}

// BeaconScore is the outcome for one labelled implant or updater.
type BeaconScore struct {
	Label    Label `json:"label"`
	Detected bool  `json:"detected"`
	// TimeToFirstAlert is the first alert's stream time minus the label's
	// first event; 0 when not detected.
	TimeToFirstAlert time.Duration `json:"-"`
	TimeToFirstS     float64       `json:"time_to_first_alert_s,omitempty"`
}

// Scorecard scores detections against the ground truth. Implants are the
// positives: an implant detected is a true positive, one missed a false
// negative, and any other detected tuple (updater, fleet service,
// unlabelled) a false positive.
type Scorecard struct {
	Classes        []ClassScore  `json:"classes"`
	Beacons        []BeaconScore `json:"beacons"`
	TruePositives  int           `json:"true_positives"`
	FalsePositives int           `json:"false_positives"`
	FalseNegatives int           `json:"false_negatives"`
	Precision      float64       `json:"precision"` // TP/(TP+FP); 0 when nothing was detected
	Recall         float64       `json:"recall"`    // TP/(TP+FN); 0 when nothing was planted
}

// Score compares detections with labels. A tuple detected twice counts
// once, at its earliest alert.
func Score(labels []Label, detections []Detection) Scorecard {
	first := map[Tuple]beacon.Time{}
	for _, d := range detections {
		if t, ok := first[d.Tuple]; !ok || d.FirstAlert < t {
			first[d.Tuple] = d.FirstAlert
		}
	}
	var sc Scorecard
	classes := map[string]*ClassScore{}
	class := func(name string) *ClassScore {
		if c, ok := classes[name]; ok {
			return c
		}
		c := &ClassScore{Class: name}
		classes[name] = c
		return c
	}
	labelled := map[Tuple]bool{}
	for _, l := range labels {
		if labelled[l.Tuple] {
			continue // one tuple, one outcome
		}
		labelled[l.Tuple] = true
		c := class(l.Class)
		c.Labelled++
		t, hit := first[l.Tuple]
		if hit {
			c.Detected++
		} else {
			c.Missed++
		}
		switch {
		case l.Class == ClassImplant && hit:
			sc.TruePositives++
		case l.Class == ClassImplant:
			sc.FalseNegatives++
		case hit:
			sc.FalsePositives++
		}
		if l.Class == ClassImplant || l.Class == ClassUpdater {
			b := BeaconScore{Label: l, Detected: hit}
			if hit {
				b.TimeToFirstAlert = time.Duration(t-l.FirstEvent) * 100
				b.TimeToFirstS = b.TimeToFirstAlert.Seconds()
			}
			sc.Beacons = append(sc.Beacons, b)
		}
	}
	for t := range first {
		if !labelled[t] {
			c := class(ClassUnlabelled)
			c.Detected++
			sc.FalsePositives++
		}
	}
	for _, c := range classes {
		sc.Classes = append(sc.Classes, *c)
	}
	order := map[string]int{ClassImplant: 0, ClassUpdater: 1, ClassFleetService: 2, ClassUnlabelled: 3}
	slices.SortFunc(sc.Classes, func(a, b ClassScore) int {
		oa, ok := order[a.Class]
		if !ok {
			oa = 4
		}
		ob, ok := order[b.Class]
		if !ok {
			ob = 4
		}
		if oa != ob {
			return oa - ob
		}
		return strings.Compare(a.Class, b.Class)
	})
	slices.SortFunc(sc.Beacons, func(a, b BeaconScore) int {
		if a.Label.Class != b.Label.Class {
			return strings.Compare(a.Label.Class, b.Label.Class)
		}
		return a.Label.Tuple.Compare(&b.Label.Tuple)
	})
	if n := sc.TruePositives + sc.FalsePositives; n > 0 {
		sc.Precision = float64(sc.TruePositives) / float64(n)
	}
	if n := sc.TruePositives + sc.FalseNegatives; n > 0 {
		sc.Recall = float64(sc.TruePositives) / float64(n)
	}
	return sc
}

// WriteTable prints the scorecard for people.
func (sc *Scorecard) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CLASS\tLABELLED\tDETECTED\tMISSED")
	for _, c := range sc.Classes {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\n", c.Class, c.Labelled, c.Detected, c.Missed)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "BEACON\tCLASS\tSLEEP\tJITTER\tDEVICE\tPROCESS\tREMOTE\tDETECTED\tTIME TO FIRST ALERT")
	for _, b := range sc.Beacons {
		l := &b.Label
		ttf := "-"
		if b.Detected {
			ttf = b.TimeToFirstAlert.Round(time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%g\t%s\t%s\t%s:%d\t%v\t%s\n", l.Name, l.Class, l.Sleep, l.Jitter,
			l.DeviceName, l.FileName, l.RemoteIP, l.RemotePort, b.Detected, ttf)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\nimplants: %d detected, %d missed; %d false positive(s); precision %.3f, recall %.3f\n",
		sc.TruePositives, sc.FalseNegatives, sc.FalsePositives, sc.Precision, sc.Recall)
	return err
}
