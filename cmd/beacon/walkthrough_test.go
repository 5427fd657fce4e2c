package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/beaconhunt/beacon/internal/testkit"
)

// compose is the part of docker-compose.yml the walk-through uses.
type compose struct {
	Services map[string]struct {
		Command     []string          `yaml:"command"`
		Entrypoint  []string          `yaml:"entrypoint"`
		Environment map[string]string `yaml:"environment"`
		Healthcheck struct {
			Test []string `yaml:"test"`
		} `yaml:"healthcheck"`
	} `yaml:"services"`
}

// TestComposeWalkthrough runs docker-compose.yml's walk-through — the
// beacon service as configured there, then the simulate service's command,
// then the beacon service's healthcheck — with the embedded broker in
// place of Kafka, and checks that it ends with alerts on the alert topic,
// a beacon set on /beacons and a healthy service. Before, the simulated
// day ended exactly when the default warm-up (the lookback) did, and the
// walk-through never alerted.
func TestComposeWalkthrough(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var c compose
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	svc, sim, init := c.Services["beacon"], c.Services["simulate"], c.Services["init-topics"]
	if len(svc.Command) == 0 || len(sim.Command) == 0 || len(init.Entrypoint) == 0 || len(svc.Healthcheck.Test) < 3 {
		t.Fatalf("docker-compose.yml lacks the beacon or simulate command, init-topics or the healthcheck: %+v", c)
	}
	flagOf := func(args []string, name string) string {
		if i := slices.Index(args, name); i >= 0 && i+1 < len(args) {
			return args[i+1]
		}
		t.Fatalf("%q has no %s", args, name)
		return ""
	}
	topic := flagOf(init.Entrypoint, "--topic")
	parts, err := strconv.Atoi(flagOf(init.Entrypoint, "--partitions"))
	if err != nil {
		t.Fatal(err)
	}
	cluster := testkit.NewCluster(t, testkit.Topics(parts, topic))
	addr := cluster.Addr
	kafka := "kafka:9092"
	httpAddr := freePort(t)
	for k, v := range svc.Environment {
		switch k {
		case "BEACON_BROKERS":
			v = strings.ReplaceAll(v, kafka, addr)
		case "BEACON_STATE_DIR":
			v = filepath.Join(t.TempDir(), "state")
		case "BEACON_LISTEN": // loopback only here
			v = httpAddr
		}
		t.Setenv(k, v)
	}
	port := httpAddr[strings.LastIndex(httpAddr, ":")+1:]
	health := slices.Clone(svc.Healthcheck.Test[2:]) // after CMD and the binary
	for i := range health {
		health[i] = strings.ReplaceAll(health[i], "127.0.0.1:9464", "127.0.0.1:"+port)
	}
	if err := run(context.Background(), health, stdio{strings.NewReader(""), io.Discard, io.Discard}); err == nil {
		t.Fatal("the healthcheck passes with no service running")
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var errOut testkit.SyncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, svc.Command, stdio{strings.NewReader(""), io.Discard, &errOut}) }()

	simArgs := slices.Clone(sim.Command)
	for i := range simArgs {
		simArgs[i] = strings.ReplaceAll(simArgs[i], kafka, addr)
	}
	if raceEnabled { // the same day and two hours, of a smaller fleet (the last --devices wins)
		simArgs = append(simArgs, "--devices", "40")
	}
	if err := run(ctx, simArgs, stdio{strings.NewReader(""), io.Discard, io.Discard}); err != nil {
		t.Fatalf("%q: %v", simArgs, err)
	}

	alerts := func() int64 {
		var n int64
		for _, o := range cluster.EndOffsets(t, "beacon.alerts") {
			n += max(o, 0)
		}
		return n
	}
	var healthOut testkit.SyncBuffer
	testkit.WaitFor(t, 3*time.Minute, "a healthy service that has read everything", func() (bool, string) {
		returned(t, done, &errOut)
		err := run(ctx, health, stdio{strings.NewReader(""), &healthOut, io.Discard})
		ok, saw := caughtUp(t, cluster, "beacon", topic)
		return err == nil && ok, fmt.Sprintf("healthcheck %v; %s; %d alerts\n%s", err, saw, alerts(), errOut.String())
	})
	// Alerts are acknowledged before the offsets after them are
	// committed: all is read, all that alerts has.
	if alerts() == 0 {
		t.Fatalf("the walk-through read everything and published no alert\n%.3000s", errOut.String())
	}
	resp, err := http.Get("http://" + httpAddr + "/beacons?format=table")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.HasPrefix(string(body), "0 beacon") || !strings.Contains(string(body), "beacon(s)") {
		t.Errorf("/beacons?format=table:\n%s", body)
	}
	t.Logf("%d alerts; /beacons: %s", alerts(), strings.SplitN(string(body), "\n", 2)[0])
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("beacon run: %v\n%s", err, errOut.String())
	}
	// The start-up line names what an operator checks first.
	for _, want := range []string{`"msg":"beacon service starting"`, `"brokers":["` + addr + `"]`, `"input_topics":["` + topic + `"]`,
		`"group":"beacon"`, `"profile":"` + streamProfile + `"`, `"state_dir":"`} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("the log lacks %s:\n%.2000s", want, errOut.String())
		}
	}
}
