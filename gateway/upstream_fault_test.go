package gateway_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// faultyUpstream is a real MCP server behind a switch that makes tools/call
// hang, crash (the connection closes mid-call) or answer garbage.
type faultyUpstream struct {
	mode atomic.Value // "", "hang", "crash", "garbage"
}

func startFaultyUpstream(t *testing.T) (*faultyUpstream, string, func()) {
	t.Helper()
	u := &faultyUpstream{}
	u.mode.Store("")
	s := server.NewMCPServer("faulty", "1.0.0", server.WithToolCapabilities(false))
	s.AddTool(mcp.NewTool("work", mcp.WithDescription("Answers at once.")),
		func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return mcp.NewToolResultText("done"), nil
		})
	inner := server.NewStreamableHTTPServer(s)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			inner.ServeHTTP(w, r)
			return
		}
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		if !bytes.Contains(body, []byte(`"tools/call"`)) {
			inner.ServeHTTP(w, r)
			return
		}
		switch u.mode.Load().(string) {
		case "hang":
			<-r.Context().Done()
			return
		case "crash":
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				_ = conn.Close()
			}
			return
		case "garbage":
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte("\x00\xffnot json {{{"))
			return
		}
		inner.ServeHTTP(w, r)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/mcp", h)
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return u, "http://" + ln.Addr().String() + "/mcp", func() { _ = srv.Close() }
}

// TestUpstreamFaults: an upstream that hangs, that crashes mid-call, that
// answers garbage or that is gone. Expected, for each: the agent gets a
// tool error that names the failure within the call's timeout (500 ms
// here), the gateway keeps serving other tools, and once the upstream
// behaves again its next call succeeds, without restarting toolgate.
func TestUpstreamFaults(t *testing.T) {
	up, upURL, stop := startFaultyUpstream(t)
	rep := startReplica(t, replicaOpts{upstream: upURL, timeout: 500 * time.Millisecond})
	hc := &http.Client{Timeout: 20 * time.Second}
	token := mintToken(t, rep.url, "agent-1", sessionKeys["KEY1"], "")
	if status, body := rawCall(hc, rep.url, token, "web__work", 1); status != 200 || !strings.Contains(body, `"done"`) {
		t.Fatalf("healthy call = %d %s; want done", status, body)
	}
	tests := []struct {
		mode string
		want string // in the tool error the agent sees
	}{
		{"hang", "toolgate:"},
		{"crash", "toolgate:"},
		{"garbage", "toolgate:"},
	}
	for i, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			up.mode.Store(tt.mode)
			start := time.Now()
			status, body := rawCall(hc, rep.url, token, "web__work", 10+i)
			took := time.Since(start)
			if status != 200 || !strings.Contains(body, `"isError":true`) || !strings.Contains(body, tt.want) {
				t.Fatalf("call to a %s upstream = %d %s; want a tool error containing %q", tt.mode, status, body, tt.want)
			}
			t.Logf("%s upstream: refused after %v: %.200s", tt.mode, took, body)
			if status, body := rawCall(hc, rep.url, token, "demo__list_files", 20+i); status != 200 || strings.Contains(body, `"isError":true`) {
				t.Fatalf("other tool while web is %s = %d %s; want served", tt.mode, status, body)
			}
			up.mode.Store("")
			if status, body := rawCall(hc, rep.url, token, "web__work", 30+i); status != 200 || !strings.Contains(body, `"done"`) {
				t.Fatalf("call after the upstream recovered from %s = %d %s; want done", tt.mode, status, body)
			}
		})
	}
	t.Run("gone", func(t *testing.T) {
		stop()
		status, body := rawCall(hc, rep.url, token, "web__work", 40)
		if status != 200 || !strings.Contains(body, `"isError":true`) {
			t.Fatalf("call to a stopped upstream = %d %s; want a tool error", status, body)
		}
		if status, body := rawCall(hc, rep.url, token, "demo__list_files", 41); status != 200 || strings.Contains(body, `"isError":true`) {
			t.Fatalf("other tool while web is gone = %d %s; want served", status, body)
		}
	})
}
