package stream

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
)

// health holds what /readyz decides on. The topic watch fills the broker's
// side every WatchInterval; the partitions' side is read from the running
// parts when asked.
type health struct {
	mu        sync.Mutex
	checked   time.Time // last check by the watch; zero before the first
	brokerErr error     // the last metadata request's error
	missing   []string  // input topics the broker does not know
	ends      map[int32]int64
}

// watch checks the cluster every WatchInterval: is the broker reachable,
// do the input topics exist, what are the repartition topic's end offsets
// (for the lag /readyz bounds). With CreateTopics it creates the service's
// own topics when they go missing (a broker that came back empty). It
// notices an input topic that was deleted and recreated (a new topic ID,
// which franz-go never adopts on its own) and makes ingest subscribe to it
// again; an own topic recreated under a running service ends the service,
// whose clients hold the old topic's ID: a restart starts clean.
type watch struct {
	s     *Service
	cl    *kgo.Client
	adm   *kadm.Client
	ids   map[string]kadm.TopicID // the topic IDs seen first
	state map[string]string       // what was last said about a topic, so each change is logged once
}

func newWatch(s *Service) (*watch, error) {
	cl, err := kgo.NewClient(s.clientOpts("beacon-watch")...)
	if err != nil {
		return nil, err
	}
	return &watch{s: s, cl: cl, adm: kadm.NewClient(cl), ids: make(map[string]kadm.TopicID), state: make(map[string]string)}, nil
}

func (w *watch) close() { w.cl.Close() }

func (w *watch) run(ctx context.Context) error {
	defer w.close()
	t := time.NewTicker(w.s.cfg.watchInterval)
	defer t.Stop()
	for {
		if err := w.check(ctx); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// say logs once per change of what is said about topic ("" for the
// broker); during log, w.state[topic] is still what was said before.
func (w *watch) say(topic, what string, log func()) {
	if w.state[topic] != what {
		log()
		w.state[topic] = what
	}
}

func (w *watch) check(ctx context.Context) error {
	s := w.s
	cctx, cancel := context.WithTimeout(ctx, max(w.s.cfg.watchInterval, 5*time.Second))
	defer cancel()
	own := []string{s.cfg.repartition, s.cfg.deadLetter}
	if s.cfg.role != RoleIngest {
		own = append(own, s.cfg.alertTopic)
	}
	var inputs []string
	if s.cfg.role != RoleDetect {
		inputs = s.cfg.inputTopics
	}
	md, err := w.adm.Metadata(cctx, append(slices.Clone(inputs), own...)...)
	if err == nil && len(md.Brokers) == 0 {
		err = errors.New("no broker in the metadata")
	}
	if ctx.Err() != nil {
		return nil
	}
	h := &s.health
	if err != nil {
		w.say("", "down", func() { s.log.Warn("broker unreachable", zap.Strings("brokers", s.cfg.brokers), zap.Error(err)) })
		h.mu.Lock()
		h.checked, h.brokerErr = time.Now(), err
		h.mu.Unlock()
		return nil
	}
	w.say("", "up", func() {
		if w.state[""] == "down" {
			s.log.Info("broker reachable again", zap.Strings("brokers", s.cfg.brokers))
		}
	})
	var missing []string
	for _, t := range inputs {
		td, ok := md.Topics[t]
		switch {
		case !ok || errors.Is(td.Err, kerr.UnknownTopicOrPartition):
			missing = append(missing, t)
			w.say(t, "missing", func() {
				s.log.Warn("input topic does not exist: not ready until it does", zap.String("topic", t))
			})
		case td.Err != nil:
			w.say(t, td.Err.Error(), func() { s.log.Warn("input topic unavailable", zap.String("topic", t), zap.Error(td.Err)) })
		default:
			w.say(t, "ok", func() {
				if in := s.in.Load(); in != nil && w.state[t] != "" {
					in.cl.ForceMetadataRefresh() // it was missing: subscribe without waiting for the client's own refresh
				}
			})
			if old, seen := w.ids[t]; seen && old != td.ID {
				s.log.Warn("input topic was recreated: consuming it again from its start",
					zap.String("topic", t), zap.String("old_id", old.String()), zap.String("new_id", td.ID.String()))
				if in := s.in.Load(); in != nil {
					in.cl.PurgeTopicsFromConsuming(t)
					in.cl.AddConsumeTopics(t)
				}
			}
			w.ids[t] = td.ID
		}
	}
	var create, gone []string
	for _, t := range own {
		td, ok := md.Topics[t]
		switch {
		case !ok || errors.Is(td.Err, kerr.UnknownTopicOrPartition):
			if s.cfg.createTopics {
				create = append(create, t)
				if _, seen := w.ids[t]; seen {
					gone = append(gone, t)
				}
			} else {
				w.say(t, "missing", func() {
					s.log.Warn("topic does not exist and --create-topics is off", zap.String("topic", t))
				})
			}
		case td.Err != nil:
		default:
			if old, seen := w.ids[t]; seen && old != td.ID {
				return fmt.Errorf("topic %s was deleted and recreated (id %s, now %s): restart, so that every client starts on the new topic", t, old, td.ID)
			}
			w.ids[t] = td.ID
			w.say(t, "ok", func() {})
		}
	}
	if len(create) > 0 {
		if err := s.createTopics(cctx, w.adm, create...); err != nil {
			s.quiet.Warn("could not create missing topics", zap.Strings("topics", create), zap.Error(err))
		}
		if len(gone) > 0 {
			// The clients hold the old topics' IDs, which franz-go never
			// trades for new ones: start again with new clients.
			return fmt.Errorf("topics %v disappeared (a broker that lost its data?) and were created again: restart, so that every client uses the new topics", gone)
		}
	}
	var ends map[int32]int64
	if s.cfg.role != RoleIngest {
		if lo, err := w.adm.ListEndOffsets(cctx, s.cfg.repartition); err == nil {
			ends = make(map[int32]int64)
			lo.Each(func(o kadm.ListedOffset) {
				if o.Err == nil {
					ends[o.Partition] = o.Offset
				}
			})
		}
	}
	h.mu.Lock()
	h.checked, h.brokerErr, h.missing, h.ends = time.Now(), nil, missing, ends
	h.mu.Unlock()
	return nil
}

// readiness is the answer of /readyz.
type readiness struct {
	Ready   bool              `json:"ready"`
	Status  string            `json:"status"` // ok or not ready
	Role    Role              `json:"role"`
	Reasons []string          `json:"reasons,omitempty"` // why not ready; empty when ready
	Parts   []partitionStatus `json:"partitions,omitempty"`
}

// ready decides readiness: the broker answered the last check, every input
// topic exists, this process owns partitions (an instance beyond the
// partition count stays not ready: it serves nothing), no part failed, and
// every owned partition is at most ReadyMaxLag records behind: repartition
// partitions behind the topic's end as of the last check, input partitions
// behind their high watermark as of their last fetch.
func (s *Service) ready() readiness {
	r := readiness{Role: s.cfg.role}
	if !s.running.Load() || s.crashed.Load() {
		r.Reasons = append(r.Reasons, "not running")
	}
	if p := s.fatal.Load(); p != nil {
		r.Reasons = append(r.Reasons, "failed: "+(*p).Error())
	}
	h := &s.health
	h.mu.Lock()
	checked, brokerErr, missing, ends := h.checked, h.brokerErr, slices.Clone(h.missing), h.ends
	h.mu.Unlock()
	switch {
	case checked.IsZero():
		r.Reasons = append(r.Reasons, "broker not checked yet")
	case brokerErr != nil:
		r.Reasons = append(r.Reasons, "broker unreachable: "+brokerErr.Error())
	case time.Since(checked) > 3*s.cfg.watchInterval+10*time.Second:
		r.Reasons = append(r.Reasons, "broker not checked since "+checked.UTC().Format(time.RFC3339))
	}
	for _, t := range missing {
		r.Reasons = append(r.Reasons, "input topic "+t+" does not exist")
	}
	if in := s.in.Load(); in != nil {
		switch n, lag := in.merge.assigned(); {
		case n == 0:
			r.Reasons = append(r.Reasons, "no input partition assigned")
		case s.cfg.readyMaxLag > 0 && lag > s.cfg.readyMaxLag:
			r.Reasons = append(r.Reasons, fmt.Sprintf("an input partition is %d records behind (bound %d)", lag, s.cfg.readyMaxLag))
		}
	}
	if d := s.det.Load(); d != nil {
		r.Parts = d.status()
		slices.SortFunc(r.Parts, func(a, b partitionStatus) int { return int(a.Partition - b.Partition) })
		if len(r.Parts) == 0 {
			r.Reasons = append(r.Reasons, "no repartition partition assigned")
		}
		for i := range r.Parts {
			p := &r.Parts[i]
			end, ok := ends[p.Partition]
			if !ok {
				continue
			}
			p.Lag = max(end-max(p.Offset, 0), 0)
			if s.cfg.readyMaxLag > 0 && p.Lag > s.cfg.readyMaxLag {
				r.Reasons = append(r.Reasons, fmt.Sprintf("partition %d is %d records behind (bound %d)", p.Partition, p.Lag, s.cfg.readyMaxLag))
			}
		}
	}
	r.Ready, r.Status = len(r.Reasons) == 0, "ok"
	if !r.Ready {
		r.Status = "not ready"
	}
	return r
}

// createTopics creates topics with the configured partitions and
// replication, logging each one created.
func (s *Service) createTopics(ctx context.Context, adm *kadm.Client, topics ...string) error {
	resp, err := adm.CreateTopics(ctx, s.cfg.partitions, s.cfg.replication, nil, topics...)
	if err != nil {
		return fmt.Errorf("creating topics: %w", err)
	}
	for _, r := range resp.Sorted() {
		switch {
		case r.Err == nil:
			s.log.Info("topic created", zap.String("topic", r.Topic), zap.Int32("partitions", r.NumPartitions))
		case errors.Is(r.Err, kerr.TopicAlreadyExists):
		default:
			// Some services (Event Hubs without management rights) refuse
			// creation; the topics may exist anyway.
			s.log.Warn("could not create topic", zap.String("topic", r.Topic), zap.Error(r.Err))
		}
	}
	return nil
}
