package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
	"gopkg.in/yaml.v3"

	"github.com/beaconhunt/beacon/internal/testkit"
	"github.com/beaconhunt/beacon/pkg/fleet"
	"github.com/beaconhunt/beacon/pkg/stream"
)

// TestRunConfigPrecedence: flags beat the environment, which beats the
// YAML file, which beats the defaults; lists and durations read from YAML;
// an unknown key or a bad value is an error that names it.
func TestRunConfigPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "beacon.yaml")
	os.WriteFile(file, []byte(`
brokers: file:9092
input-topics: [a, b]
lookback: 2h
jitter-threshold: 25
group: from-file
sasl-mechanism: PLAIN
`), 0o644)
	env := map[string]string{
		"BEACON_BROKERS":       "env:9092",
		"BEACON_SASL_PASSWORD": "Endpoint=sb://x/;SharedAccessKey=y",
		"BEACON_GROUP":         "from-env",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	var c runConfig
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	registerRunFlags(fs, &c)
	if err := fs.Parse([]string{"--group", "from-flag", "--config", file}); err != nil {
		t.Fatal(err)
	}
	if err := layerConfig(fs, c.config, lookup); err != nil {
		t.Fatal(err)
	}
	checks := []struct{ name, got, want string }{
		{"group (flag > env > file)", c.group, "from-flag"},
		{"brokers (env > file)", c.brokers, "env:9092"},
		{"sasl-password (env)", c.saslPassword, "Endpoint=sb://x/;SharedAccessKey=y"},
		{"input-topics (file list)", c.inputTopics, "a,b"},
		{"lookback (file duration)", c.params.Lookback.String(), "2h0m0s"},
		{"sasl-mechanism (file)", c.saslMechanism, "PLAIN"},
		{"alert-topic (default)", c.alerts, "beacon.alerts"},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %q, want %q", ch.name, ch.got, ch.want)
		}
	}
	if c.params.JitterThreshold != 25 {
		t.Errorf("jitter-threshold = %v, want 25 from the file", c.params.JitterThreshold)
	}

	// BEACON_CONFIG names the file when --config does not.
	var c2 runConfig
	fs2 := flag.NewFlagSet("run", flag.ContinueOnError)
	registerRunFlags(fs2, &c2)
	fs2.Parse(nil)
	if err := layerConfig(fs2, "", func(k string) (string, bool) {
		if k == "BEACON_CONFIG" {
			return file, true
		}
		return "", false
	}); err != nil || c2.brokers != "file:9092" {
		t.Errorf("BEACON_CONFIG: brokers %q, err %v", c2.brokers, err)
	}

	for _, bad := range []struct{ yaml, want string }{
		{"brokres: x:1\n", "unknown settings brokres"},
		{"lookback: soon\n", "lookback"},
		{"brokers: {a: b}\n", "not a mapping"},
	} {
		os.WriteFile(file, []byte(bad.yaml), 0o644)
		var c runConfig
		fs := flag.NewFlagSet("run", flag.ContinueOnError)
		registerRunFlags(fs, &c)
		fs.Parse(nil)
		err := layerConfig(fs, file, func(string) (string, bool) { return "", false })
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%q: error %v, want one mentioning %q", bad.yaml, err, bad.want)
		}
	}
	var c3 runConfig
	fs3 := flag.NewFlagSet("run", flag.ContinueOnError)
	registerRunFlags(fs3, &c3)
	fs3.Parse(nil)
	if err := layerConfig(fs3, "", func(k string) (string, bool) { return "x", k == "BEACON_LOOKBACK" }); err == nil ||
		!strings.Contains(err.Error(), "BEACON_LOOKBACK") {
		t.Errorf("a bad environment value: %v", err)
	}
}

// TestRunHelp: --help teaches: usage line, examples, every flag.
func TestRunHelp(t *testing.T) {
	errOut, _, err := runCmd(t, "run", "--help") // help goes to stdout
	if err != flag.ErrHelp {
		t.Fatalf("err %v, want flag.ErrHelp", err)
	}
	for _, want := range []string{"Usage: beacon run", "Examples:", "BEACON_", "$ConnectionString", "-brokers", "-sasl-mechanism",
		"-tls", "-state-dir", "-alert-format", "-realert-interval", "-listen", "-lookback", "-jitter-threshold"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("run --help does not mention %q", want)
		}
	}
}

// freePort returns a loopback address nothing listens on.
func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestRunCommand runs 'beacon run' itself against an in-process broker,
// configured by a YAML file and the environment: it ingests Streaming API
// envelopes, publishes alerts, serves /healthz, /metrics and /beacons, and
// shuts down gracefully on cancel, with its offsets committed.
func TestRunCommand(t *testing.T) {
	cluster := testkit.NewCluster(t, testkit.Topics(3, "beacon.events"))
	addr := cluster.Addr

	g, err := fleet.New(fleet.Config{Seed: 5, Devices: 20, Duration: 4 * time.Hour, Sleeps: []time.Duration{30 * time.Second, time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	var rs []fleet.Record
	for r, ok := g.NextRecord(); ok; r, ok = g.NextRecord() {
		rs = append(rs, r)
	}
	var recs []*kgo.Record
	for i := 0; i < len(rs); i += 50 {
		recs = append(recs, &kgo.Record{Value: fleet.AppendEnvelope(nil, "", rs[i:min(i+50, len(rs))])})
	}
	cluster.Produce(t, "beacon.events", recs...)

	httpAddr := freePort(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "beacon.yaml")
	os.WriteFile(cfg, []byte("brokers: ["+addr+"]\nstate-dir: "+filepath.Join(dir, "state")+
		"\nlookback: 1h\ncommit-interval: 200ms\npartitions: 4\nlog-level: warn\n"), 0o644)
	t.Setenv("BEACON_LISTEN", httpAddr)
	t.Setenv("BEACON_CONFIG", cfg)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var errOut testkit.SyncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"run"}, stdio{strings.NewReader(""), io.Discard, &errOut}) }()

	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + httpAddr + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	testkit.WaitFor(t, 60*time.Second, "run to be ready and caught up", func() (bool, string) {
		returned(t, done, &errOut)
		code, _ := get("/healthz")
		ok, saw := caughtUp(t, cluster, "beacon", "beacon.events")
		return code == 200 && ok, fmt.Sprintf("/healthz %d; %s\n%s", code, saw, errOut.String())
	})
	if code, body := get("/beacons?format=table"); code != 200 || !strings.Contains(body, "beacon(s)") || strings.HasPrefix(body, "0 beacon") {
		t.Errorf("/beacons?format=table: %d\n%s", code, body)
	}
	col := `"TimeDeltaInSeconds_avg"` // a column of run's default profile
	if streamProfile == "robust" {
		col = `"PeriodSeconds"`
	}
	if code, body := get("/beacons"); code != 200 || !strings.Contains(body, col) {
		t.Errorf("/beacons: %d %.200s", code, body)
	}
	// /healthz shows each partition's stream time and beacon count as of
	// its last evaluation.
	if code, body := get("/healthz"); code != 200 || !strings.Contains(body, `"stream_time":"`) || !regexp.MustCompile(`"beacons":[1-9]`).MatchString(body) {
		t.Errorf("/healthz: %d %.400s", code, body)
	}
	code, body := get("/metrics")
	for _, m := range []string{"beacon_events_in_total", "beacon_events_dropped_total", "beacon_alerts_total",
		"beacon_evaluation_seconds_bucket", "beacon_state_bytes", "beacon_events_late_total", `client_id="beacon-detect"`} {
		if code != 200 || !strings.Contains(body, m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
	var alerts int64
	for _, o := range cluster.EndOffsets(t, "beacon.alerts") {
		alerts += o
	}
	if alerts == 0 {
		t.Error("no alerts published")
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v\n%s", err, errOut.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not shut down")
	}
	if strings.Contains(errOut.String(), `"level":"error"`) {
		t.Errorf("errors logged:\n%s", errOut.String())
	}
}

// TestComposeFile: docker-compose.yml parses, has Kafka in KRaft mode and
// beacon run built from the Dockerfile, and every BEACON_ variable it sets
// is a flag of run (a typo would be silently ignored by Docker).
func TestComposeFile(t *testing.T) {
	b, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Services map[string]struct {
			Image       string            `yaml:"image"`
			Build       any               `yaml:"build"`
			Command     []string          `yaml:"command"`
			Environment map[string]string `yaml:"environment"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	kafka, ok := doc.Services["kafka"]
	if !ok || !strings.HasPrefix(kafka.Image, "apache/kafka") || !strings.Contains(kafka.Environment["KAFKA_PROCESS_ROLES"], "controller") {
		t.Errorf("no KRaft apache/kafka service: %+v", kafka)
	}
	bc, ok := doc.Services["beacon"]
	if !ok || bc.Build == nil || len(bc.Command) == 0 || bc.Command[0] != "run" {
		t.Fatalf("no beacon run service built from the Dockerfile: %+v", bc)
	}
	var c runConfig
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	registerRunFlags(fs, &c)
	names := make(map[string]bool)
	fs.VisitAll(func(f *flag.Flag) { names[envName(f.Name)] = true })
	for k := range bc.Environment {
		if !names[k] {
			t.Errorf("docker-compose.yml sets %s, which is no flag of beacon run", k)
		}
	}
	for name, svc := range doc.Services {
		if svc.Image == "beacon:latest" && len(svc.Command) > 0 {
			found := false
			for _, cmd := range commands() {
				found = found || cmd.name == svc.Command[0]
			}
			if !found {
				t.Errorf("service %s runs unknown command %q", name, svc.Command[0])
			}
		}
	}
	if _, err := os.Stat("../../Dockerfile"); err != nil {
		t.Error(err)
	}
}

// selfSigned returns a TLS server config for 127.0.0.1 and the PEM of its
// certificate, to trust on the client side.
func selfSigned(t *testing.T) (*tls.Config, []byte) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kfake"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}},
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// TestRunEventHubsStyle: the connection Azure Event Hubs' Kafka endpoint
// wants — SASL_SSL, mechanism PLAIN, user $ConnectionString, the connection
// string as password from the environment — against a broker that
// enforces it; and SCRAM-SHA-512 the same way. The service must ingest and
// detect through it.
func TestRunEventHubsStyle(t *testing.T) {
	const conn = "Endpoint=sb://demo.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=c2VjcmV0"
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-512"} {
		t.Run(mech, func(t *testing.T) {
			srv, caPEM := selfSigned(t)
			cluster := testkit.NewCluster(t, testkit.Topics(2, "beacon.events"), kfake.TLS(srv), kfake.EnableSASL(),
				kfake.Superuser(mech, "$ConnectionString", conn))
			addr := cluster.Addr
			dir := t.TempDir()
			ca := filepath.Join(dir, "ca.pem")
			os.WriteFile(ca, caPEM, 0o644)

			// Produce through the same security settings.
			var c runConfig
			fs := flag.NewFlagSet("run", flag.ContinueOnError)
			registerRunFlags(fs, &c)
			fs.Parse([]string{"--tls-ca", ca, "--sasl-mechanism", mech, "--sasl-user", "$ConnectionString", "--sasl-password", conn})
			kopts, err := c.kafkaOpts()
			if err != nil {
				t.Fatal(err)
			}
			cluster.ClientOpts = kopts
			g, _ := fleet.New(fleet.Config{Seed: 6, Devices: 20, Duration: 3 * time.Hour, Sleeps: []time.Duration{30 * time.Second}})
			var recs []*kgo.Record
			for r, ok := g.NextRecord(); ok; r, ok = g.NextRecord() {
				recs = append(recs, &kgo.Record{Value: fleet.AppendJSON(nil, &r)})
			}
			cluster.Produce(t, "beacon.events", recs...)

			t.Setenv("BEACON_SASL_PASSWORD", conn)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var errOut testkit.SyncBuffer
			done := make(chan error, 1)
			go func() {
				done <- run(ctx, []string{"run", "--brokers", addr, "--tls", "--tls-ca", ca, "--sasl-mechanism", mech,
					"--sasl-user", "$ConnectionString", "--state-dir", filepath.Join(dir, "state"), "--lookback", "1h",
					"--commit-interval", "200ms", "--listen", "", "--compression", "none", "--log-level", "warn"},
					stdio{strings.NewReader(""), io.Discard, &errOut})
			}()
			testkit.WaitFor(t, 60*time.Second, "progress through "+mech+" over TLS", func() (bool, string) {
				returned(t, done, &errOut)
				ok, saw := caughtUp(t, cluster, "beacon", "beacon.events")
				return ok, saw + "\n" + errOut.String()
			})
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Alert lines bypass the log sampler; other repeated lines are sampled.
func TestLoggerNeverSamplesAlerts(t *testing.T) {
	var out bytes.Buffer
	log, err := newLogger("info", "json", stdio{errOut: &out})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 300; i++ {
		log.Info(stream.AlertLogMessage, zap.Int("i", i))
		log.Warn("bad record", zap.Int("i", i))
	}
	alerts := strings.Count(out.String(), `"msg":"`+stream.AlertLogMessage+`"`)
	bad := strings.Count(out.String(), `"msg":"bad record"`)
	if alerts != 300 || bad >= 300 {
		t.Fatalf("%d alert lines (want 300), %d bad-record lines (want sampled, < 300)", alerts, bad)
	}
}
