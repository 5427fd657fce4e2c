package state

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

const (
	crashEnv      = "BEACON_STATE_CRASH_DIR"
	crashEveryEnv = "BEACON_STATE_CRASH_COMMIT_EVERY" // WithCommitEvery of the child
)

var crashParams = testParams(10*time.Minute, time.Second)

// crashInput is input number i of partition pid: a pure function of both,
// so a child resuming at any recorded offset continues the same sequence
// and the parent can recompute the state at any offset. Forty tuples over
// five destinations (one of twelve devices) fire every 10 s of event time
// with per-tuple noise; 10% arrive up to 3 min out of order, 2% late; every
// seventh input is a domain observation alone.
func crashInput(pid int32, i int64) in {
	rng := rand.New(rand.NewPCG(uint64(pid)<<32|0xc0ffee, uint64(i)))
	k := int(i % 40)
	ip := fmt.Sprintf("198.51.%d.%d", 100+pid, k%3)
	tu := beacon.Tuple{DeviceId: fmt.Sprintf("d%d", k%13), DeviceName: "h", AccountName: "u", AccountDomain: "c",
		FileName: []string{"a.exe", "b.exe", "c.exe"}[k/13%3], RemoteIP: ip, RemotePort: 443}
	t := testBase + beacon.Time(i)*beacon.Second/4
	noise := []beacon.Time{0, beacon.Second / 10, 2 * beacon.Second, 6 * beacon.Second}[k%4]
	if noise > 0 {
		t += beacon.Time(rng.Int64N(int64(noise)))
	}
	switch r := rng.Float64(); {
	case r < 0.02:
		t -= 12 * 60 * beacon.Second
	case r < 0.12:
		t -= beacon.Time(rng.Int64N(int64(3 * 60 * beacon.Second)))
	}
	url := fmt.Sprintf("x%d.example.com", rng.IntN(6))
	if i%7 == 3 {
		return in{tuple: beacon.Tuple{RemoteIP: ip}, url: url, time: t - 24*3600*beacon.Second}
	}
	return in{conn: true, tuple: tu, url: url, time: t}
}

func crashInputs(pid int32, from, to int64) []in {
	out := make([]in, 0, to-from)
	for i := from; i < to; i++ {
		out = append(out, crashInput(pid, i))
	}
	return out
}

func crashBatch(pid int32, offset int64) int64 {
	return 1 + int64(rand.New(rand.NewPCG(uint64(pid), uint64(offset))).IntN(64))
}

// TestMain runs the crash test's child when the parent asks for it (the
// environment names the store), and the tests otherwise.
func TestMain(m *testing.M) {
	if dir := os.Getenv(crashEnv); dir != "" {
		if err := crashChild(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	// The tests' partitions have a few destinations: MembersOf decides
	// them on goroutines all the same.
	minDecidesPerGoroutine = 1
	os.Exit(m.Run())
}

// crashChild is the process the crash test kills: it resumes both
// partitions at their recorded offsets and applies batches until killed.
func crashChild(dir string) error {
	every, _ := strconv.Atoi(os.Getenv(crashEveryEnv))
	s, err := Open(dir, crashParams, WithCommitEvery(max(every, 1)))
	if err != nil {
		return err
	}
	var parts [2]*Partition
	var offs [2]int64
	for i := range parts {
		if parts[i], err = s.Partition(int32(i)); err != nil {
			return err
		}
		offs[i], _ = parts[i].Offset()
		offs[i] = max(offs[i], 0)
	}
	fmt.Println("ready") // the parent's clock starts now
	for {
		for i, p := range parts {
			pid := int32(i)
			n := crashBatch(pid, offs[i])
			conns, doms := stateInputs(crashInputs(pid, offs[i], offs[i]+n))
			offs[i] += n
			if _, err := p.Apply(conns, doms, offs[i], strconv.AppendInt(nil, offs[i], 10)); err != nil {
				return err
			}
		}
	}
}

// TestCrashRecovery kills a child applying batches with SIGKILL at random
// moments; after each kill the reopened store must hold, for each
// partition, exactly the state of its recorded offset: the batch query over
// the inputs before it, the same summaries and stored timestamps, and the
// blob written in the same batch.
func TestCrashRecovery(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(1, 2))
	var last [2]int64
	rows := 0
	kills := 5
	if testing.Short() {
		kills = 2
	}
	for k := range kills {
		cmd := exec.Command(os.Args[0])
		// Every other child holds back commits: it must still leave the
		// state of a recorded offset, an older one.
		cmd.Env = append(os.Environ(), crashEnv+"="+dir, fmt.Sprintf("%s=%d", crashEveryEnv, 1+k%2*6))
		var errOut bytes.Buffer
		cmd.Stderr = &errOut
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill at a random moment after the child opened the store (a
		// busy machine must not turn every kill into a kill during Open).
		ready := make(chan string, 1)
		go func() {
			line, _ := bufio.NewReader(stdout).ReadString('\n')
			ready <- line
			io.Copy(io.Discard, stdout)
		}()
		select {
		case line := <-ready:
			if line != "ready\n" {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("child: %q\n%s", line, errOut.Bytes())
			}
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			t.Fatal("child did not open the store")
		}
		time.Sleep(time.Duration(50+rng.IntN(500)) * time.Millisecond)
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
			t.Fatalf("child ended before the kill: %v\n%s", err, errOut.Bytes())
		}
		s := openT(t, dir, crashParams)
		for i := range 2 {
			pid := int32(i)
			p, err := s.Partition(pid)
			if err != nil {
				t.Fatal(err)
			}
			off, ok := p.Offset()
			if !ok {
				off = 0
			}
			if ok && string(p.Meta()) != strconv.FormatInt(off, 10) {
				t.Fatalf("kill %d p%d: meta %q with offset %d", k, pid, p.Meta(), off)
			}
			if off < last[i] {
				t.Fatalf("kill %d p%d: offset went back from %d to %d", k, pid, last[i], off)
			}
			last[i] = off
			m := newModel(t, pid, crashParams)
			m.feed(crashInputs(pid, 0, off))
			m.offset = off
			if ok {
				m.check(p, true)
			}
			all, err := p.Beacons()
			if err != nil {
				t.Fatal(err)
			}
			rows += len(all)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		t.Logf("kill %d: offsets %v", k, last)
	}
	if last[0] < 1000 || rows == 0 {
		t.Fatalf("too little happened: offsets %v, %d rows", last, rows)
	}
}
