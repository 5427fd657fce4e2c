package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestHealthCommand: beacon health exits 0 (nil) on a 2xx answer and 1 on
// anything else or no answer, and prints the endpoint's JSON.
func TestHealthCommand(t *testing.T) {
	ready := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.NotFound(w, r)
			return
		}
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"ready":false,"reasons":["broker unreachable"]}`)
			return
		}
		io.WriteString(w, `{"ready":true}`)
	}))
	defer srv.Close()
	call := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(context.Background(), append([]string{"health"}, args...), stdio{strings.NewReader(""), &out, io.Discard})
		return out.String(), err
	}
	if out, err := call("--url", srv.URL+"/readyz"); err != nil || out != `{"ready":true}` {
		t.Errorf("ready: %q, %v", out, err)
	}
	ready = false
	if out, err := call("--url", srv.URL+"/readyz"); err == nil || !strings.Contains(out, "broker unreachable") || !strings.Contains(err.Error(), "503") {
		t.Errorf("not ready: %q, %v", out, err)
	}
	addr := srv.Listener.Addr().String()
	srv.Close()
	if _, err := call("--url", "http://"+addr+"/readyz", "--timeout", "1s"); err == nil {
		t.Error("no server: no error")
	}
	for _, bad := range [][]string{{"--url", "127.0.0.1:9464"}, {"--timeout", "0s"}, {"extra"}} {
		if _, err := call(bad...); err == nil {
			t.Errorf("%q accepted", bad)
		} else if _, ok := err.(usageError); !ok {
			t.Errorf("%q: %v, want a usage error", bad, err)
		}
	}
}
