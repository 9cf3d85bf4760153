// Package bench measures what toolgate adds to a tool call: the same calls
// made directly to an upstream and through a gateway process, alternately.
package bench

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// Options says what to measure.
type Options struct {
	// Concurrency lists the numbers of concurrent clients to measure.
	Concurrency []int
	// Duration of one measured phase (one side, one level, one round).
	Duration time.Duration
	// Rounds of direct/gateway pairs per level; figures are medians over rounds.
	Rounds int
	// Gateway starts the gateway process given its configuration file:
	// typically the toolgate binary with "serve --config".
	Gateway func(configPath string) *exec.Cmd
	// RedisURL, when set, keeps the gateway's sessions in that Redis
	// (else in memory).
	RedisURL string
	// Policies are policy files or folders the gateway loads.
	Policies []string
	// Detectors turns the call-chain detectors on.
	Detectors bool
	// Tracing exports every span in OTLP/HTTP batches to a receiver that
	// the bench runs in its own process (it decodes nothing, counts bytes).
	Tracing bool
	// Audit records every decision: to the Redis stream with a Redis
	// store (which always audits), else to a file in a temporary folder.
	Audit bool
	// ExtraConfig is appended to the generated gateway configuration
	// (YAML at the top level).
	ExtraConfig string
}

// Phase is one measured run of N clients against one target.
type Phase struct {
	Target      string // "direct" or "gateway"
	Clients     int
	Calls       int
	Errors      int
	Elapsed     time.Duration
	P50, P90    time.Duration
	P99, Max    time.Duration
	CPUPerCall  time.Duration // gateway process CPU (user+system) per call; gateway phases only
	RSSBytes    int64         // gateway resident set size after the phase; gateway phases only
	AnonBytes   int64         // the anonymous part of RSSBytes (heap, stacks); the rest is mapped files, the binary mostly
	PeakRSS     int64         // gateway's peak resident set size during the phase (VmHWM; since start if it cannot be reset)
	CallsPerSec float64
}

// Run starts an echo upstream and the gateway, measures every level, and
// writes a report to w.
func Run(ctx context.Context, opts Options, w io.Writer) ([]Phase, error) {
	if opts.Rounds <= 0 {
		opts.Rounds = 1
	}
	if opts.Duration <= 0 {
		opts.Duration = 5 * time.Second
	}
	if len(opts.Concurrency) == 0 {
		opts.Concurrency = []int{1, 8, 64}
	}
	upstream, stopUpstream, err := startEchoUpstream()
	if err != nil {
		return nil, err
	}
	defer stopUpstream()

	dir, err := os.MkdirTemp("", "toolgate-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "bench.yaml")
	var keyBytes [16]byte
	_, _ = rand.Read(keyBytes[:])
	key := hex.EncodeToString(keyBytes[:])
	keyHash := sha256.Sum256([]byte(key))
	var extra strings.Builder
	if opts.Detectors {
		extra.WriteString("    detectors: {}\n")
	}
	var spans *stageCollector
	if opts.Tracing {
		spans = newStageCollector()
		endpoint, stopReceiver, err := startOTLPReceiver(spans)
		if err != nil {
			return nil, err
		}
		defer stopReceiver()
		fmt.Fprintf(&extra, "telemetry:\n  traces:\n    exporter: otlp-http\n    endpoint: %s\n", endpoint)
	}
	if opts.Audit {
		// The log copy would cost a JSON log line per call on top of the
		// stream or file; a deployment that wants both pays for both.
		extra.WriteString("audit:\n  log: false\n")
		if opts.RedisURL == "" {
			fmt.Fprintf(&extra, "  file: %q\n", filepath.Join(dir, "audit.jsonl"))
		}
	}
	if opts.RedisURL != "" {
		fmt.Fprintf(&extra, "store:\n  type: redis\n  redis:\n    url: %s\n    prefix: bench-%x\n", opts.RedisURL, keyBytes[:4])
	}
	if len(opts.Policies) > 0 {
		extra.WriteString("policies:\n  paths:\n")
		for _, p := range opts.Policies {
			abs, err := filepath.Abs(p)
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(&extra, "    - %q\n", abs)
		}
	}
	cfg := fmt.Sprintf(`gateway:
  listen: %s
identity:
  api_keys:
    - agent: bench
      profile: default
      sha256: %x
profiles:
  default:
    lifetime: 1h
    tools: ["*"]
%stools:
  servers:
    - name: up
      transport: streamable-http
      url: %s
      labels: [external_send]
log:
  level: warn
%s`, addr, keyHash, extra.String(), upstream, opts.ExtraConfig)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	cmd := opts.Gateway(cfgPath)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start gateway: %w", err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	gw := target{url: "http://" + addr + "/mcp", tokenURL: "http://" + addr + "/oauth/token", key: key}
	if err := waitReady(ctx, gw, "up__echo"); err != nil {
		return nil, err
	}

	var phases []Phase
	var windows []window
	for _, n := range opts.Concurrency {
		for r := 0; r < opts.Rounds; r++ {
			direct, err := measure(ctx, target{url: upstream}, "echo", n, opts.Duration, 0)
			if err != nil {
				return nil, fmt.Errorf("direct, %d clients: %w", n, err)
			}
			direct.Target = "direct"
			began := time.Now()
			via, err := measure(ctx, gw, "up__echo", n, opts.Duration, cmd.Process.Pid)
			if err != nil {
				return nil, fmt.Errorf("gateway, %d clients: %w", n, err)
			}
			windows = append(windows, window{clients: n, start: began, end: time.Now()})
			via.Target = "gateway"
			phases = append(phases, direct, via)
		}
	}
	report(w, phases, opts)
	if spans != nil {
		spans.settle(time.Second, 10*time.Second)
		reportStages(w, spans.stages(opts.Concurrency, windows))
	}
	return phases, nil
}

func report(w io.Writer, phases []Phase, opts Options) {
	fmt.Fprintf(w, "toolgate bench: echo over Streamable HTTP on loopback, %s per phase, %d round(s), medians over rounds\n", opts.Duration, opts.Rounds)
	store := "memory"
	if opts.RedisURL != "" {
		store = "redis"
	}
	fmt.Fprintf(w, "store=%s policies=%v detectors=%v tracing=%v audit=%v\n\n", store, opts.Policies, opts.Detectors, opts.Tracing, opts.Audit || opts.RedisURL != "")
	fmt.Fprintf(w, "%-8s %-8s %10s %9s %9s %9s %9s %12s %10s %10s %10s %8s\n", "clients", "target", "calls/s", "p50", "p90", "p99", "max", "cpu/call", "rss", "anon", "peak", "errors")
	for _, n := range opts.Concurrency {
		var direct, via []Phase
		for _, p := range phases {
			if p.Clients != n {
				continue
			}
			if p.Target == "direct" {
				direct = append(direct, p)
			} else {
				via = append(via, p)
			}
		}
		d, g := median(direct), median(via)
		for _, p := range []Phase{d, g} {
			cpu, rss, anon, peak := "", "", "", ""
			if p.Target == "gateway" {
				cpu = fmt.Sprintf("%.0fµs", float64(p.CPUPerCall)/1e3)
				rss, anon, peak = mib(p.RSSBytes), mib(p.AnonBytes), mib(p.PeakRSS)
			}
			fmt.Fprintf(w, "%-8d %-8s %10.0f %9s %9s %9s %9s %12s %10s %10s %10s %8d\n", n, p.Target, p.CallsPerSec,
				ms(p.P50), ms(p.P90), ms(p.P99), ms(p.Max), cpu, rss, anon, peak, p.Errors)
		}
		fmt.Fprintf(w, "%-8d %-8s %9.2fx %+8.3fms %+8.3fms %+8.3fms\n\n", n, "added", g.CallsPerSec/d.CallsPerSec,
			float64(g.P50-d.P50)/1e6, float64(g.P90-d.P90)/1e6, float64(g.P99-d.P99)/1e6)
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3fms", float64(d)/1e6) }

func mib(b int64) string { return fmt.Sprintf("%.1fMiB", float64(b)/(1<<20)) }

// median takes, field by field, the median over rounds.
func median(ps []Phase) Phase {
	if len(ps) == 0 {
		return Phase{}
	}
	out := ps[0]
	pick := func(get func(Phase) float64) float64 {
		v := make([]float64, len(ps))
		for i, p := range ps {
			v[i] = get(p)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	out.P50 = time.Duration(pick(func(p Phase) float64 { return float64(p.P50) }))
	out.P90 = time.Duration(pick(func(p Phase) float64 { return float64(p.P90) }))
	out.P99 = time.Duration(pick(func(p Phase) float64 { return float64(p.P99) }))
	out.Max = time.Duration(pick(func(p Phase) float64 { return float64(p.Max) }))
	out.CallsPerSec = pick(func(p Phase) float64 { return p.CallsPerSec })
	out.CPUPerCall = time.Duration(pick(func(p Phase) float64 { return float64(p.CPUPerCall) }))
	out.RSSBytes = int64(pick(func(p Phase) float64 { return float64(p.RSSBytes) }))
	out.AnonBytes = int64(pick(func(p Phase) float64 { return float64(p.AnonBytes) }))
	out.PeakRSS = int64(pick(func(p Phase) float64 { return float64(p.PeakRSS) }))
	errs := 0
	for _, p := range ps {
		errs += p.Errors
	}
	out.Errors = errs
	return out
}

// measure runs n clients, each initialised once and then calling tool in
// a loop for d, and returns the latency distribution. pid, if not zero,
// is the gateway process whose CPU and RSS are read.
func measure(ctx context.Context, tg target, tool string, n int, d time.Duration, pid int) (Phase, error) {
	if pid != 0 {
		resetPeakRSS(pid) // the peak of this phase, its clients' set-up included
	}
	clients := make([]*client.Client, n)
	for i := range clients {
		c, err := connect(ctx, tg)
		if err != nil {
			return Phase{}, err
		}
		defer c.Close()
		clients[i] = c
	}
	// One warm-up call each, so that connection set-up is not measured.
	for _, c := range clients {
		if err := callEcho(ctx, c, tool); err != nil {
			return Phase{}, err
		}
	}
	cpuBefore, _ := processCPU(pid)
	var mu sync.Mutex
	var all []time.Duration
	errs := 0
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 4096)
			bad := 0
			for time.Now().Before(deadline) {
				t0 := time.Now()
				if err := callEcho(ctx, c, tool); err != nil {
					bad++
					continue
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			all = append(all, lat...)
			errs += bad
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	p := Phase{Clients: n, Calls: len(all), Errors: errs, Elapsed: elapsed}
	if len(all) == 0 {
		return p, errors.New("no call succeeded")
	}
	slices.Sort(all)
	q := func(f float64) time.Duration { return all[min(len(all)-1, int(f*float64(len(all))))] }
	p.P50, p.P90, p.P99, p.Max = q(0.50), q(0.90), q(0.99), all[len(all)-1]
	p.CallsPerSec = float64(len(all)) / elapsed.Seconds()
	if pid != 0 {
		if cpuAfter, err := processCPU(pid); err == nil {
			p.CPUPerCall = (cpuAfter - cpuBefore) / time.Duration(len(all)+errs)
		}
		if m, err := processMemory(pid); err == nil {
			p.RSSBytes, p.AnonBytes, p.PeakRSS = m.rss, m.anon, m.peak
		}
	}
	return p, nil
}

// target is where clients connect: the upstream directly, or the gateway,
// where each client first gets a session token of its own.
type target struct {
	url      string
	tokenURL string // empty: no authentication
	key      string
}

func connect(ctx context.Context, tg target) (*client.Client, error) {
	// Each client gets its own connection pool, as separate agents would.
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4, IdleConnTimeout: time.Minute}}
	opts := []transport.StreamableHTTPCOption{transport.WithHTTPBasicClient(hc)}
	if tg.tokenURL != "" {
		token, err := sessionToken(ctx, hc, tg)
		if err != nil {
			return nil, err
		}
		opts = append(opts, transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer " + token}))
	}
	tr, err := transport.NewStreamableHTTP(tg.url, opts...)
	if err != nil {
		return nil, err
	}
	c := client.NewClient(tr)
	if err := c.Start(ctx); err != nil {
		return nil, err
	}
	if _, err := c.Initialize(ctx, mcp.InitializeRequest{}); err != nil {
		c.Close()
		return nil, fmt.Errorf("initialize %s: %w", tg.url, err)
	}
	return c, nil
}

// sessionToken gets a session token with the client-credentials grant.
func sessionToken(ctx context.Context, hc *http.Client, tg target) (string, error) {
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {"bench"}, "client_secret": {tg.key}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tg.tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var body struct {
		AccessToken string `json:"access_token"`
		Error       string `json:"error_description"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return "", fmt.Errorf("token endpoint: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("token endpoint: %s: %s", resp.Status, body.Error)
	}
	return body.AccessToken, nil
}

func callEcho(ctx context.Context, c *client.Client, tool string) error {
	req := mcp.CallToolRequest{}
	req.Params.Name = tool
	req.Params.Arguments = map[string]any{"message": "hello"}
	res, err := c.CallTool(ctx, req)
	if err != nil {
		return err
	}
	if res.IsError {
		return fmt.Errorf("tool error: %v", res.Content)
	}
	return nil
}

func waitReady(ctx context.Context, tg target, tool string) error {
	deadline := time.Now().Add(20 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		c, err := connect(ctx, tg)
		if err == nil {
			last = callEcho(ctx, c, tool)
			c.Close()
			if last == nil {
				return nil
			}
		} else {
			last = err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("gateway not ready: %w", last)
}

// startEchoUpstream serves an mcp-go echo tool over Streamable HTTP on
// loopback and returns its URL.
func startEchoUpstream() (string, func(), error) {
	s := server.NewMCPServer("bench-echo", "1.0.0", server.WithToolCapabilities(false))
	s.AddTool(mcp.NewTool("echo", mcp.WithDescription("Echoes the message."), mcp.WithString("message")),
		func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return mcp.NewToolResultText(req.GetString("message", "")), nil
		})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/mcp", server.NewStreamableHTTPServer(s))
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String() + "/mcp", func() { _ = srv.Close() }, nil
}

// startOTLPReceiver accepts OTLP/HTTP trace exports on loopback with h, as
// a collector would.
func startOTLPReceiver(h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String() + "/v1/traces", func() { _ = srv.Close() }, nil
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// processCPU is the user+system CPU time of pid, from /proc.
func processCPU(pid int) (time.Duration, error) {
	if pid == 0 {
		return 0, nil
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	rest := string(data[strings.LastIndexByte(string(data), ')')+2:])
	f := strings.Fields(rest)
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const ticks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticks, nil
}

// memory is what /proc/PID/status says of a process's resident memory.
type memory struct {
	rss, anon, peak int64 // VmRSS, RssAnon, VmHWM in bytes
}

// processMemory reads the resident set of pid, from /proc.
func processMemory(pid int) (memory, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memory{}, err
	}
	return parseStatus(string(data))
}

func parseStatus(status string) (memory, error) {
	var m memory
	fields := map[string]*int64{"VmRSS:": &m.rss, "RssAnon:": &m.anon, "VmHWM:": &m.peak}
	found := 0
	for _, line := range strings.Split(status, "\n") {
		for prefix, dst := range fields {
			if v, ok := strings.CutPrefix(line, prefix); ok {
				kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				if err != nil {
					return memory{}, fmt.Errorf("%s %w", prefix, err)
				}
				*dst = kb * 1024
				found++
			}
		}
	}
	if found != len(fields) {
		return memory{}, errors.New("no VmRSS, RssAnon or VmHWM")
	}
	return m, nil
}

// resetPeakRSS starts pid's VmHWM afresh at its current RSS (proc(5),
// /proc/pid/clear_refs, value 5). Where that is not allowed, the peak
// stays the one since the process started.
func resetPeakRSS(pid int) {
	_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}
