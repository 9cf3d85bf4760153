package main

import (
	"context"
	"io/fs"
	"log/slog"
	"math"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/toolgate/toolgate/internal/config"
)

// TestQuickstart runs what the README's first command runs — serve with
// examples/quickstart.yaml — and uses it as an agent would.
func TestQuickstart(t *testing.T) {
	cfg, err := config.Load("../../examples/quickstart.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Gateway.Listen = "127.0.0.1:0"
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	errc := make(chan error, 1)
	go func() { errc <- serve(ctx, cfg, slog.New(slog.DiscardHandler), func(a string) { addrc <- a }) }()
	var addr string
	select {
	case addr = <-addrc:
	case err := <-errc:
		t.Fatalf("serve: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("serve never became ready")
	}

	callCtx, callCancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer callCancel()
	// The quick start's demo agent presents its API key directly, which
	// opens an implicit session (the README says so).
	c, err := client.NewStreamableHttpClient("http://"+addr+"/mcp",
		transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer demo-agent-key-change-me"}))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(callCtx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Initialize(callCtx, mcp.InitializeRequest{}); err != nil {
		t.Fatal(err)
	}
	list, err := c.ListTools(callCtx, mcp.ListToolsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, tool := range list.Tools {
		names[tool.Name] = true
	}
	for _, want := range []string{"demo__read_file", "demo__read_secret", "demo__http_request", "demo__run_shell", "demo__deploy", "demo__sign_artifact"} {
		if !names[want] {
			t.Errorf("quick start tools/list lacks %q", want)
		}
	}
	req := mcp.CallToolRequest{}
	req.Params.Name = "demo__list_files"
	req.Params.Arguments = map[string]any{}
	res, err := c.CallTool(callCtx, req)
	if err != nil || res.IsError {
		t.Fatalf("demo__list_files = %+v, %v", res, err)
	}
	c.Close()

	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("serve ended with %v; want a clean shutdown", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop after its context ended")
	}
}

func TestRuntimeSettings(t *testing.T) {
	const v2 = "0::/\n"
	const v1 = "12:memory:/job\n11:cpu,cpuacct:/job\n"
	tests := []struct {
		name          string
		yaml          string
		env           map[string]string
		files         map[string]string
		wantGCPercent int
		wantLimit     int64
	}{
		{name: "defaults outside a container", files: map[string]string{"/proc/self/cgroup": v2, "/sys/fs/cgroup/memory.max": "max\n"},
			wantGCPercent: config.DefaultGCPercent},
		{name: "cgroup v2 limit", files: map[string]string{"/proc/self/cgroup": v2, "/sys/fs/cgroup/memory.max": "1073741824\n"},
			wantGCPercent: config.DefaultGCPercent, wantLimit: 1073741824 / 10 * 9},
		{name: "cgroup v2 nested", files: map[string]string{"/proc/self/cgroup": "0::/app.slice/tg\n", "/sys/fs/cgroup/app.slice/tg/memory.max": "104857600"},
			wantGCPercent: config.DefaultGCPercent, wantLimit: 104857600 / 10 * 9},
		{name: "cgroup v1 limit", files: map[string]string{"/proc/self/cgroup": v1, "/sys/fs/cgroup/memory/job/memory.limit_in_bytes": "524288000\n"},
			wantGCPercent: config.DefaultGCPercent, wantLimit: 524288000 / 10 * 9},
		{name: "cgroup v1 unlimited", files: map[string]string{"/proc/self/cgroup": v1, "/sys/fs/cgroup/memory/job/memory.limit_in_bytes": "9223372036854771712\n"},
			wantGCPercent: config.DefaultGCPercent},
		{name: "no cgroup files", wantGCPercent: config.DefaultGCPercent},
		{name: "config", yaml: "runtime: {memory_limit: 256MiB, gc_percent: 100}",
			files:         map[string]string{"/proc/self/cgroup": v2, "/sys/fs/cgroup/memory.max": "1073741824\n"},
			wantGCPercent: 100, wantLimit: 256 << 20},
		{name: "config off", yaml: "runtime: {memory_limit: \"off\"}",
			files:         map[string]string{"/proc/self/cgroup": v2, "/sys/fs/cgroup/memory.max": "1073741824\n"},
			wantGCPercent: config.DefaultGCPercent, wantLimit: math.MaxInt64},
		{name: "environment wins", yaml: "runtime: {memory_limit: 256MiB, gc_percent: 100}",
			env:   map[string]string{"GOGC": "80", "GOMEMLIMIT": "1GiB"},
			files: map[string]string{"/proc/self/cgroup": v2, "/sys/fs/cgroup/memory.max": "1073741824\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte("tools: {}\n" + tt.yaml + "\n"))
			if err != nil {
				t.Fatal(err)
			}
			readFile := func(name string) ([]byte, error) {
				if v, ok := tt.files[name]; ok {
					return []byte(v), nil
				}
				return nil, fs.ErrNotExist
			}
			gc, limit := runtimeSettings(cfg.Runtime, func(k string) string { return tt.env[k] }, readFile)
			if gc != tt.wantGCPercent || limit != tt.wantLimit {
				t.Errorf("runtimeSettings = gc_percent %d, memory limit %d; want %d, %d", gc, limit, tt.wantGCPercent, tt.wantLimit)
			}
		})
	}
}

func TestMaxProcs(t *testing.T) {
	tests := []struct {
		yaml string
		env  map[string]string
		want int
	}{
		{yaml: "", want: 0},
		{yaml: "runtime: {max_procs: 1}", want: 1},
		{yaml: "runtime: {max_procs: 1}", env: map[string]string{"GOMAXPROCS": "4"}, want: 0},
	}
	for _, tt := range tests {
		cfg, err := config.Parse([]byte("tools: {}\n" + tt.yaml + "\n"))
		if err != nil {
			t.Fatal(err)
		}
		if got := maxProcs(cfg.Runtime, func(k string) string { return tt.env[k] }); got != tt.want {
			t.Errorf("maxProcs(%q, env %v) = %d; want %d", tt.yaml, tt.env, got, tt.want)
		}
	}
}
