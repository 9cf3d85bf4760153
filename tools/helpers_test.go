package tools_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/toolgate/toolgate/tools"
	"github.com/toolgate/toolgate/tools/internal/testupstream"
)

// stdioBinary is the test upstream built once for stdio tests.
var stdioBinary string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "toolgate-tools-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "temp dir:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	stdioBinary = filepath.Join(dir, "testupstream")
	cmd := exec.Command(goBin, "build", "-o", stdioBinary, "./internal/testupstream/cmd/testupstream")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build test upstream:", err)
		return 1
	}
	return m.Run()
}

// startHTTP serves a test upstream over Streamable HTTP and returns its URL.
func startHTTP(t *testing.T, name string) (*testupstream.Upstream, string) {
	t.Helper()
	u := testupstream.New(name)
	ts := httptest.NewServer(server.NewStreamableHTTPServer(u.Server))
	t.Cleanup(ts.Close)
	return u, ts.URL + "/mcp"
}

// startSSE serves a test upstream over the legacy SSE transport.
func startSSE(t *testing.T, name string) (*testupstream.Upstream, string) {
	t.Helper()
	u := testupstream.New(name)
	ts := httptest.NewUnstartedServer(nil)
	base := "http://" + ts.Listener.Addr().String()
	ts.Config.Handler = server.NewSSEServer(u.Server, server.WithBaseURL(base))
	ts.Start()
	t.Cleanup(ts.Close)
	return u, base + "/sse"
}

func stdioServer(name string) tools.ServerConfig {
	return tools.ServerConfig{Name: name, Transport: tools.TransportStdio, Command: stdioBinary,
		Env: map[string]string{"TESTUPSTREAM_NAME": name}}
}

// changes counts OnChange calls and lets tests wait for the next one.
type changes struct {
	mu sync.Mutex
	n  int
	ch chan struct{}
}

func newChanges() *changes { return &changes{ch: make(chan struct{}, 100)} }

func (c *changes) fire() {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
	c.ch <- struct{}{}
}

func fastOptions(c *changes) tools.Options {
	o := tools.Options{
		Logger:          slog.New(slog.DiscardHandler),
		ConnectAttempts: 3,
		InitialBackoff:  10 * time.Millisecond,
		MaxBackoff:      50 * time.Millisecond,
		HealthInterval:  50 * time.Millisecond,
	}
	if c != nil {
		o.OnChange = c.fire
	}
	return o
}

// start builds and starts a Manager, closing it at cleanup; Start's error is returned.
func start(t *testing.T, cfg tools.Config, opts tools.Options) (*tools.Manager, error) {
	t.Helper()
	m, err := tools.New(cfg, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return m, m.Start(ctx)
}

func mustStart(t *testing.T, cfg tools.Config, opts tools.Options) *tools.Manager {
	t.Helper()
	m, err := start(t, cfg, opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	return m
}

// eventually polls cond until it holds or a deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func text(t *testing.T, res *mcp.CallToolResult) string {
	t.Helper()
	if res == nil || len(res.Content) == 0 {
		t.Fatalf("result has no content: %+v", res)
	}
	tc, ok := res.Content[0].(mcp.TextContent)
	if !ok {
		t.Fatalf("content[0] is %T; want text", res.Content[0])
	}
	return tc.Text
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("decode %s: %v", a, err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return reflect.DeepEqual(x, y)
}

func callErr(t *testing.T, err error) *tools.CallError {
	t.Helper()
	var ce *tools.CallError
	if !errors.As(err, &ce) {
		t.Fatalf("error %v (%T) is not a *CallError", err, err)
	}
	return ce
}

// restartableHTTP serves a test upstream on a fixed address that can be stopped and started again.
type restartableHTTP struct {
	addr string
	srv  *http.Server
}

func (r *restartableHTTP) start(t *testing.T, u *testupstream.Upstream) {
	t.Helper()
	addr := r.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var l net.Listener
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for {
		l, err = net.Listen("tcp", addr)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	r.addr = l.Addr().String()
	r.srv = &http.Server{Handler: server.NewStreamableHTTPServer(u.Server)}
	go r.srv.Serve(l)
	srv := r.srv
	t.Cleanup(func() { srv.Close() })
}

func (r *restartableHTTP) stop() { r.srv.Close() }

func (r *restartableHTTP) url() string { return "http://" + r.addr + "/mcp" }

func contains(s, sub string) bool { return strings.Contains(s, sub) }
