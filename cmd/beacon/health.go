package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

const healthUsage = `health [flags]

Asks a running 'beacon run' whether it is ready (or live) and exits 0 if
so, 1 if not: a container healthcheck for an image without curl. The
answer's JSON, which names the reasons, goes to stdout.

  /readyz  broker reachable, input topics present, partitions owned, no
           failure, lag within --ready-max-lag (the default)
  /livez   the process works: restart it if not

Examples:
  beacon health                                   # http://127.0.0.1:9464/readyz
  beacon health --url http://127.0.0.1:9464/livez
  # docker-compose.yml: healthcheck: {test: ["CMD", "beacon", "health"]}

Flags:`

func runHealth(ctx context.Context, args []string, s stdio) error {
	fs := newFlags("health", healthUsage, s)
	url := fs.String("url", "http://127.0.0.1:9464/readyz", "endpoint to ask: .../readyz, .../livez (or .../healthz, an alias of /readyz)")
	timeout := fs.Duration("timeout", 5*time.Second, "give up after this long (a duration such as 5s)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("health: unexpected arguments %q", fs.Args())
	}
	if !strings.HasPrefix(*url, "http://") && !strings.HasPrefix(*url, "https://") {
		return usagef("health: --url %q: want an http:// or https:// URL", *url)
	}
	if *timeout <= 0 {
		return usagef("health: --timeout must be positive, a duration such as 5s")
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
	if err != nil {
		return usagef("health: %v", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	s.out.Write(body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("health: %s: %s", *url, resp.Status)
	}
	return nil
}
