// Package testkit holds what the end-to-end tests of this module share: an
// in-process Kafka broker (franz-go's kfake) on loopback, producing events
// and records, reading a topic to its end, waiting for a condition with a
// deadline that says what it last saw, running a command line in process
// (RunMain), and building and running the beacon binary as a real
// subprocess.
//
// It depends on no package under test beyond the event type and the
// fleet's JSON writer, so pkg/stream's own tests can use it (it must never
// import pkg/stream: that would be an import cycle for them).
package testkit

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/beaconhunt/beacon/pkg/beacon"
	"github.com/beaconhunt/beacon/pkg/fleet"
)

// Topic is a topic the cluster starts with.
type Topic struct {
	Name       string
	Partitions int
}

// Topics are topics of the same partition count.
func Topics(partitions int, names ...string) []Topic {
	out := make([]Topic, len(names))
	for i, n := range names {
		out[i] = Topic{n, partitions}
	}
	return out
}

// Cluster is a kfake broker on loopback, closed when the test ends.
type Cluster struct {
	*kfake.Cluster
	Addr string
	// ClientOpts are given to every client of the kit's (Client, Admin,
	// Produce…): the TLS and SASL settings of a cluster that demands them.
	// Set them before the first call.
	ClientOpts []kgo.Opt

	adminOnce sync.Once
	admin     *kadm.Client
}

// NewCluster starts a one-broker cluster on loopback with the topics.
// Extra kfake options (e.g. kfake.DataDir) are passed on.
func NewCluster(t testing.TB, topics []Topic, opts ...kfake.Opt) *Cluster {
	t.Helper()
	base := []kfake.Opt{kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(500 * time.Millisecond)}
	for _, tp := range topics {
		base = append(base, kfake.SeedTopics(int32(tp.Partitions), tp.Name))
	}
	c, err := kfake.NewCluster(append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	addr := c.ListenAddrs()[0]
	if !strings.HasPrefix(addr, "127.0.0.1:") && !strings.HasPrefix(addr, "[::1]:") && !strings.HasPrefix(addr, "localhost:") {
		t.Fatalf("kfake listens on %s, not on loopback", addr)
	}
	return &Cluster{Cluster: c, Addr: addr}
}

// Client returns a client of the cluster, closed when the test ends.
func (c *Cluster) Client(t testing.TB, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	base := append([]kgo.Opt{kgo.SeedBrokers(c.Addr)}, c.ClientOpts...)
	cl, err := kgo.NewClient(append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// Admin returns the cluster's admin client, one for the test: polling
// loops call it often, and a client per call would pile up connections.
func (c *Cluster) Admin(t testing.TB) *kadm.Client {
	c.adminOnce.Do(func() { c.admin = kadm.NewClient(c.Client(t)) })
	return c.admin
}

// Produce writes records synchronously; a record without a topic goes to
// topic.
func (c *Cluster) Produce(t testing.TB, topic string, recs ...*kgo.Record) {
	t.Helper()
	cl := c.Client(t, kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()),
		kgo.ProducerBatchMaxBytes(256<<10))
	for i := 0; i < len(recs); i += 5000 {
		if err := cl.ProduceSync(context.Background(), recs[i:min(i+5000, len(recs))]...).FirstErr(); err != nil {
			t.Fatalf("producing to %s: %v", topic, err)
		}
	}
}

// JSONRecords encodes events as flat Advanced Hunting JSON, one record
// each, the record timestamp the event's (as a sensor that reports at once).
func JSONRecords(evs []beacon.Event) []*kgo.Record {
	recs := make([]*kgo.Record, len(evs))
	for i := range evs {
		r := fleet.Record{Event: evs[i]}
		recs[i] = &kgo.Record{Value: fleet.AppendJSON(nil, &r), Timestamp: evs[i].Timestamp.Go()}
	}
	return recs
}

// ProducePinned writes records synchronously to the topic and partition
// each names (kgo's ManualPartitioner), and sets their offsets.
func (c *Cluster) ProducePinned(t testing.TB, recs ...*kgo.Record) {
	t.Helper()
	cl := c.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatalf("producing: %v", err)
	}
}

// ProduceEvents writes events as flat JSON records, round robin over
// topic's partitions (ProducePinned pins them).
func (c *Cluster) ProduceEvents(t testing.TB, topic string, evs []beacon.Event) {
	t.Helper()
	c.Produce(t, topic, JSONRecords(evs)...)
}

// Attach returns a Cluster for a broker the test started otherwise (a
// restartable kfake, one with a fixed port): the kit's clients and
// readers then work on it.
func Attach(addr string) *Cluster { return &Cluster{Addr: addr} }

// EndOffsets returns the end offset of every partition of topic.
func (c *Cluster) EndOffsets(t testing.TB, topic string) map[int32]int64 {
	t.Helper()
	return EndOffsetsOf(t, c.Admin(t), topic)
}

// EndOffsetsOf is EndOffsets through an admin client of the test's own. A
// topic that does not exist (yet) has no partitions.
func EndOffsetsOf(t testing.TB, adm *kadm.Client, topic string) map[int32]int64 {
	t.Helper()
	out, _, err := endOffsets(adm, topic)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// endOffsets lists topic's end offsets, leaving out the partitions that
// could not be listed (kadm lists a missing topic as partition -1 with an
// error); partial says why any was left out.
func endOffsets(adm *kadm.Client, topic string) (ends map[int32]int64, partial, err error) {
	lo, err := adm.ListEndOffsets(context.Background(), topic)
	if err != nil {
		return nil, nil, err
	}
	ends = make(map[int32]int64)
	lo.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			ends[o.Partition] = o.Offset
		}
	})
	return ends, lo.Error(), nil
}

// Committed reports what fraction of topic group has committed, and a
// description of it for failure messages.
func (c *Cluster) Committed(t testing.TB, group, topic string) (frac float64, saw string) {
	t.Helper()
	return CommittedOf(t, c.Admin(t), group, topic)
}

// CommittedOf is Committed through an admin client of the test's own.
func CommittedOf(t testing.TB, adm *kadm.Client, group, topic string) (frac float64, saw string) {
	t.Helper()
	// Strict: a topic that cannot be listed, or has no partitions, is not
	// committed (a wait must not pass because a topic is not there yet).
	ends, partial, err := endOffsets(adm, topic)
	if err == nil {
		err = partial
	}
	if err != nil {
		return 0, fmt.Sprintf("%s: %v", topic, err)
	}
	if len(ends) == 0 {
		return 0, topic + ": no partitions"
	}
	got, err := adm.FetchOffsets(context.Background(), group)
	if err != nil {
		return 0, fmt.Sprintf("group %s: %v", group, err)
	}
	var done, total int64
	var parts []string
	for p := int32(0); p < int32(len(ends)); p++ {
		end := ends[p]
		total += end
		at := int64(-1)
		if o, ok := got.Lookup(topic, p); ok {
			at = o.At
			done += min(max(o.At, 0), end)
		}
		parts = append(parts, fmt.Sprintf("%d:%d/%d", p, at, end))
	}
	if total == 0 {
		return 1, fmt.Sprintf("%s on %s: empty topic", group, topic)
	}
	return float64(done) / float64(total), fmt.Sprintf("%s on %s committed %s", group, topic, strings.Join(parts, " "))
}

// WaitFor polls cond every 20 ms until it holds, failing the test after
// timeout with what cond last said it saw.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() (ok bool, saw string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, saw := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: not after %s; last saw: %s", what, timeout, saw)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitCommitted waits until group has committed the whole of topic.
func (c *Cluster) WaitCommitted(t testing.TB, timeout time.Duration, group, topic string) {
	t.Helper()
	WaitFor(t, timeout, group+" to commit all of "+topic, func() (bool, string) {
		f, saw := c.Committed(t, group, topic)
		return f >= 1, saw
	})
}

// ReadRecords reads every record of topic up to the end offsets it has
// when called, in partition then offset order.
func ReadRecords(t testing.TB, c *Cluster, topic string) []*kgo.Record {
	t.Helper()
	ends := c.EndOffsets(t, topic)
	var total int64
	for _, e := range ends {
		total += e
	}
	byPart := make(map[int32][]*kgo.Record)
	if total > 0 {
		cl := c.Client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var n int64
		for n < total {
			fs := cl.PollFetches(ctx)
			if ctx.Err() != nil {
				t.Fatalf("read %d of %d records of %s", n, total, topic)
			}
			fs.EachRecord(func(r *kgo.Record) {
				if r.Offset >= ends[r.Partition] {
					return
				}
				byPart[r.Partition] = append(byPart[r.Partition], r)
				n++
			})
		}
	}
	var out []*kgo.Record
	for p := int32(0); p < int32(len(ends)); p++ {
		out = append(out, byPart[p]...)
	}
	return out
}

// ReadAll is ReadRecords with each value parsed; a value that does not
// parse fails the test, naming its topic, partition and offset.
func ReadAll[T any](t testing.TB, c *Cluster, topic string, parse func([]byte) (T, error)) []T {
	t.Helper()
	recs := ReadRecords(t, c, topic)
	out := make([]T, 0, len(recs))
	for _, r := range recs {
		v, err := parse(r.Value)
		if err != nil {
			t.Fatalf("%s/%d/%d: %v", topic, r.Partition, r.Offset, err)
		}
		out = append(out, v)
	}
	return out
}

// Main is a command's body: main without the process, what it reads and
// writes passed in (the `run(ctx, args, stdio) error` of a command).
type Main func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error

// RunMain runs a command line in process, with an empty stdin and buffers
// for its output, and cancels it after timeout.
func RunMain(t testing.TB, timeout time.Duration, main Main, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var o, e bytes.Buffer
	err = main(ctx, args, strings.NewReader(""), &o, &e)
	if ctx.Err() != nil {
		err = fmt.Errorf("%s: not done after %s (%v)", strings.Join(args, " "), timeout, err)
	}
	return o.String(), e.String(), err
}

// MustRunMain is RunMain for a command line that must succeed: an error
// fails the test with what the command wrote on stderr. It logs how long
// the command took.
func MustRunMain(t testing.TB, timeout time.Duration, main Main, args ...string) (stdout, stderr string) {
	t.Helper()
	began := time.Now()
	stdout, stderr, err := RunMain(t, timeout, main, args...)
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	t.Logf("%s: %s", strings.Join(args[:min(len(args), 2)], " "), time.Since(began).Round(time.Millisecond))
	return stdout, stderr
}

var buildMu sync.Mutex

// BuildBinary builds the beacon command into a directory of the test and
// returns its path. It is built once per call: tests that need a real
// process (to kill it) pay for one link.
func BuildBinary(t testing.TB) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	bin := filepath.Join(t.TempDir(), "beacon")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/beacon")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/beacon: %v\n%s", err, out)
	}
	return bin
}

// Proc is a running subprocess of the beacon binary.
type Proc struct {
	Cmd            *exec.Cmd
	stdout, stderr *SyncBuffer
	done           chan struct{}
	err            error
}

// Start runs bin with args, its output collected; the process is killed
// when the test ends if it is still running.
func Start(t testing.TB, bin string, args ...string) *Proc {
	t.Helper()
	p := &Proc{Cmd: exec.Command(bin, args...), stdout: &SyncBuffer{}, stderr: &SyncBuffer{}, done: make(chan struct{})}
	p.Cmd.Stdout, p.Cmd.Stderr = p.stdout, p.stderr
	p.Cmd.Env = append(os.Environ(), "GOMAXPROCS=2")
	if err := p.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.Cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.Cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// Kill sends SIGKILL (kill -9): the process gets no chance to flush,
// commit or close anything. It returns once the process is gone.
func (p *Proc) Kill(t testing.TB) {
	t.Helper()
	if err := p.Cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.done
}

// Stop sends SIGTERM and waits up to timeout for a clean exit.
func (p *Proc) Stop(t testing.TB, timeout time.Duration) error {
	t.Helper()
	p.Cmd.Process.Signal(terminate)
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		p.Cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("did not stop within %s after SIGTERM; stderr:\n%s", timeout, p.Stderr())
	}
}

// Exited reports whether the process has ended, and how.
func (p *Proc) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Stdout and Stderr return what the process wrote so far.
func (p *Proc) Stdout() string { return p.stdout.String() }
func (p *Proc) Stderr() string { return p.stderr.String() }

// Run runs bin with args to its end, bounded by timeout.
func Run(t testing.TB, timeout time.Duration, bin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s %v: not done after %s (%v)", bin, args, timeout, err)
	}
	return o.String(), e.String(), err
}

// SyncBuffer is a bytes.Buffer that a logger or a process may write while
// the test reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
