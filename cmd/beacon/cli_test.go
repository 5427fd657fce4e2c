package main

import (
	"bytes"
	"compress/gzip"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestHelpToStdout: --help, -h, help and help CMD print to stdout and
// succeed (exit 0), so that 'beacon run --help | less' works.
func TestHelpToStdout(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}, {"help", "hunt"}, {"hunt", "--help"},
		{"help", "run"}, {"replay", "-h"}, {"help", "simulate"}, {"demo", "--help"}} {
		out, errOut, err := runCmd(t, args...)
		if exitCode(err, &bytes.Buffer{}) != 0 {
			t.Errorf("%v: exit %d (%v)", args, exitCode(err, &bytes.Buffer{}), err)
		}
		if !strings.Contains(out, "Usage: beacon") || errOut != "" {
			t.Errorf("%v: stdout %q…, stderr %q", args, firstLine(out), errOut)
		}
		if len(args) == 2 && !strings.Contains(out, "Usage: beacon "+strings.TrimPrefix(args[1], "-")) &&
			!strings.Contains(out, "Usage: beacon "+args[0]) {
			t.Errorf("%v: printed %q, not the command's help", args, firstLine(out))
		}
	}
	if out, _, _ := runCmd(t, "help", "hunt"); !strings.Contains(out, "Usage: beacon hunt") {
		t.Errorf("help hunt printed %q", firstLine(out))
	}
}

func firstLine(s string) string { l, _, _ := strings.Cut(s, "\n"); return l }

// TestVersion: version and --version print the build info to stdout.
func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}, {"help", "version"}} {
		out, _, err := runCmd(t, args...)
		if err != nil || !strings.HasPrefix(out, "beacon ") || !strings.Contains(out, "go1.") {
			t.Errorf("%v: %q %v", args, out, err)
		}
	}
}

// TestErrorThenHint: a command-line mistake prints the error first, then
// one line pointing at the command's help, and exits 2; other failures
// exit 1 without the hint.
func TestErrorThenHint(t *testing.T) {
	path := writeBeaconFile(t)
	for _, c := range []struct {
		args []string
		want string // in the error line
		hint string
	}{
		{[]string{"hunt", "--lookback", "5", path}, `--lookback "5": want a duration such as 24h or 90m`, "run 'beacon hunt --help' for usage"},
		{[]string{"hunt", "--jitter-threshold", "-1", path}, "jitter-threshold must be above 0", "run 'beacon hunt --help'"},
		{[]string{"hunt", "--total-events-threshold-min", "-3", path}, "total-events-threshold-min must be at least 0", "run 'beacon hunt --help'"},
		{[]string{"hunt", "--workers", "-4", path}, "--workers must be in [0, 1024]", "run 'beacon hunt --help'"},
		{[]string{"hunt", "--compromised-device-count-max", "0", path}, "compromised-device-count-max must be at least 1", "run 'beacon hunt --help'"},
		{[]string{"hunt", "--workers", "x", path}, `--workers "x": want a whole number`, "run 'beacon hunt --help'"},
		{[]string{"hunt", "--end", "tomorrow", path}, "want an ISO 8601 date or date-time", "run 'beacon hunt --help'"},
		{[]string{"hunt"}, "no input files", "run 'beacon hunt --help'"},
		{[]string{"demo", "--start", "monday"}, "demo: --start: want an ISO 8601 date or date-time", "run 'beacon demo --help'"},
		{[]string{"demo", "--start", "2999-01-01"}, "--start must be at most --duration×--speed (16h40m0s) before now", "run 'beacon demo --help'"},
		{[]string{"run", "--no-such-flag"}, "flag provided but not defined: -no-such-flag", "run 'beacon run --help'"},
		{[]string{"nope"}, `unknown command "nope"`, "run 'beacon help' for the commands"},
	} {
		_, _, err := runCmd(t, c.args...)
		var w bytes.Buffer
		code := exitCode(err, &w)
		lines := strings.Split(strings.TrimSpace(w.String()), "\n")
		if code != 2 || len(lines) != 2 || !strings.HasPrefix(lines[0], "beacon: ") || !strings.Contains(lines[0], c.want) ||
			!strings.HasPrefix(lines[1], c.hint) {
			t.Errorf("%v: exit %d, printed\n%s\nwant %q then %q", c.args, code, w.String(), c.want, c.hint)
		}
	}
	_, _, err := runCmd(t, "hunt", filepath.Join(t.TempDir(), "missing.jsonl"))
	var w bytes.Buffer
	if code := exitCode(err, &w); code != 1 || strings.Contains(w.String(), "--help") {
		t.Errorf("missing file: exit %d, %q", code, w.String())
	}
}

// TestHuntExitStatus: exit 1 when no line decodes, the input is empty or
// gzip is truncated; 0 with the skipped count otherwise; the window is
// reported.
func TestHuntExitStatus(t *testing.T) {
	dir := t.TempDir()
	path := writeBeaconFile(t)
	data, _ := os.ReadFile(path)

	garbage := filepath.Join(dir, "ls")
	os.WriteFile(garbage, bytes.Repeat([]byte("\x7fELF\x02\x01\x01 binary junk\n"), 50), 0o644)
	_, errOut, err := runCmd(t, "hunt", "--quiet", garbage)
	if code := exitCode(err, &bytes.Buffer{}); code != 1 || !strings.Contains(err.Error(), "no line decoded (50 malformed)") {
		t.Errorf("garbage: exit %d, %v\n%s", code, err, errOut)
	}

	// No bytes is exit 1; an empty result (blank lines, [], an API
	// response without rows) is 0, with no window: there is no clock.
	for in, wantCode := range map[string]int{"": 1, "\r\n\n": 0, "[]\n": 0, `{"Schema":[],"Results":[]}`: 0} {
		empty := filepath.Join(dir, "empty.json")
		if err := os.WriteFile(empty, []byte(in), 0o644); err != nil {
			t.Fatal(err)
		}
		_, errOut, err := runCmd(t, "hunt", empty)
		if code := exitCode(err, &bytes.Buffer{}); code != wantCode || (code == 1 && !strings.Contains(err.Error(), "the input is empty")) || strings.Contains(errOut, "window") {
			t.Errorf("input %q: exit %d, %v\n%s", in, code, err, errOut)
		}
	}

	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(data)
	zw.Close()
	trunc := filepath.Join(dir, "cut.jsonl.gz")
	os.WriteFile(trunc, gz.Bytes()[:gz.Len()*2/3], 0o644)
	out, errOut, err := runCmd(t, "hunt", "--quiet", trunc)
	if code := exitCode(err, &bytes.Buffer{}); code != 1 || !strings.Contains(err.Error(), "unexpected EOF") {
		t.Errorf("truncated gzip: exit %d, %v\nstdout %q\n%s", code, err, out, errOut)
	}

	csv := filepath.Join(dir, "noport.csv")
	os.WriteFile(csv, []byte("Timestamp,DeviceId,DeviceName,ActionType,RemoteIP,InitiatingProcessFileName,InitiatingProcessAccountName,InitiatingProcessAccountDomain\n"+
		"2024-05-01T10:00:00Z,d,w,ConnectionSuccess,8.8.8.8,x.exe,a,b\n"), 0o644)
	if _, _, err := runCmd(t, "hunt", csv); exitCode(err, &bytes.Buffer{}) != 1 || !strings.Contains(err.Error(), "CSV header lacks RemotePort") {
		t.Errorf("CSV without RemotePort: %v", err)
	}

	_, errOut, err = runCmd(t, "hunt", "--end", "2024-05-01T10:30", path)
	if err != nil || !strings.Contains(errOut, "skipped 1 malformed line") ||
		!regexp.MustCompile(`window 2024-04-30T10:30:00Z \.\. 2024-05-01T10:29:59Z \(now 2024-05-01T10:30:00Z\): \d+ of 40 event\(s\)`).MatchString(errOut) {
		t.Errorf("exit %v, stderr:\n%s", err, errOut)
	}
	_, errOut, err = runCmd(t, "hunt", "--end", "2030-01-01", path)
	if err != nil || !strings.Contains(errOut, "window 2029-12-31T00:00:00Z .. 2029-12-31T23:59:59Z (now 2030-01-01T00:00:00Z): 0 of 40 event(s)") {
		t.Errorf("--end 2030-01-01: %v\n%s", err, errOut)
	}
}

// TestParseISO8601: --end takes dates and date-times, with or without a
// zone.
func TestParseISO8601(t *testing.T) {
	for in, want := range map[string]string{
		"2024-05-02":                   "2024-05-02T00:00:00Z",
		"2024-05-02T10:00":             "2024-05-02T10:00:00Z",
		"2024-05-02T10:00Z":            "2024-05-02T10:00:00Z",
		"2024-05-02T10:00:30":          "2024-05-02T10:00:30Z",
		"2024-05-02T10:00:30.25Z":      "2024-05-02T10:00:30.25Z",
		"2024-05-02T12:00+02:00":       "2024-05-02T10:00:00Z",
		"2024-05-02T12:00:00+0200":     "2024-05-02T10:00:00Z",
		"2024-05-02T08:00:00-02":       "2024-05-02T10:00:00Z",
		"2024-05-02 10:00:00":          "2024-05-02T10:00:00Z",
		"2024-05-02T10:00:00.1234567Z": "2024-05-02T10:00:00.1234567Z",
	} {
		got, err := parseISO8601(in)
		if err != nil || got.String() != want {
			t.Errorf("parseISO8601(%q) = %s, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"", "tomorrow", "2024-13-01", "2024-05-02T25:00", "05/02/2024"} {
		if _, err := parseISO8601(in); err == nil {
			t.Errorf("parseISO8601(%q) accepted", in)
		}
	}
}

// TestHelpExamplesRun runs every example line of every command's --help
// that names a file of the repository, so that the help never points at a
// file that is not there.
func TestHelpExamplesRun(t *testing.T) {
	ran := 0
	for _, c := range commands() {
		help, _, err := runCmd(t, c.name, "--help")
		if !errors.Is(err, flag.ErrHelp) {
			t.Fatalf("%s --help: %v", c.name, err)
		}
		for _, line := range strings.Split(help, "\n") {
			line = strings.TrimSpace(line)
			if !strings.HasPrefix(line, "beacon "+c.name+" ") || !strings.Contains(line, "testdata/") {
				continue
			}
			args := strings.Fields(line)[1:]
			for i, a := range args {
				if strings.HasPrefix(a, "testdata/") {
					if _, err := os.Stat(filepath.Join("../..", a)); err != nil {
						t.Errorf("%s --help names %s, which is not in the repository", c.name, a)
					}
					args[i] = filepath.Join("../..", a)
				}
				if a == ">" || a == "|" {
					args = args[:i]
					break
				}
			}
			if _, errOut, err := runCmd(t, args...); err != nil {
				t.Errorf("example %q: %v\n%s", line, err, errOut)
			}
			ran++
		}
	}
	if ran < 2 {
		t.Errorf("ran %d examples; the help should show some on the shipped sample", ran)
	}
}

// TestOneNamePerConcept: --topic names the input topics in run as in
// replay and simulate (--input-topics still works), --topic-partitions the
// partitions of topics, --workers in-process parallelism.
func TestOneNamePerConcept(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--topic", "a,b"}, "a,b"},
		{[]string{"--input-topics", "c"}, "c"},
	} {
		var rc runConfig
		fs := flag.NewFlagSet("run", flag.ContinueOnError)
		registerRunFlags(fs, &rc)
		if err := fs.Parse(c.args); err != nil || rc.inputTopics != c.want {
			t.Errorf("run %v: topics %q, %v", c.args, rc.inputTopics, err)
		}
	}
	for cmd, names := range map[string][]string{
		"run":      {"-topic ", "-topic-partitions "},
		"replay":   {"-topic ", "-workers "},
		"simulate": {"-topic ", "-topic-format "},
		"demo":     {"-topic-partitions "},
		"hunt":     {"-workers "},
	} {
		help, _, _ := runCmd(t, cmd, "--help")
		for _, n := range names {
			if !strings.Contains(help, "  "+n) {
				t.Errorf("%s --help lacks %s", cmd, n)
			}
		}
	}
}
