package tools_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
	"go.opentelemetry.io/otel/trace"

	"github.com/toolgate/toolgate/tools"
	"github.com/toolgate/toolgate/tools/internal/testupstream"
)

// rpcPeek is what the tests below read of a POSTed JSON-RPC message.
type rpcPeek struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method"`
	Params struct {
		Name string `json:"name"`
		Meta struct {
			ProgressToken any `json:"progressToken"`
		} `json:"_meta"`
	} `json:"params"`
	Result json.RawMessage `json:"result"`
}

// peekPOST reads a POST's JSON-RPC message and puts the body back.
func peekPOST(t *testing.T, r *http.Request) rpcPeek {
	t.Helper()
	var p rpcPeek
	if r.Method != http.MethodPost {
		return p
	}
	b, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(b))
	_ = json.Unmarshal(b, &p)
	return p
}

// TestHTTPCallHeaders: a forwarded tools/call carries the headers mcp-go's
// transport sends on the same session (session id, protocol version,
// configured headers) and the caller's trace context.
func TestHTTPCallHeaders(t *testing.T) {
	u := testupstream.New("up")
	inner := server.NewStreamableHTTPServer(u.Server)
	var mu sync.Mutex
	seen := map[string]http.Header{} // method -> headers of its last POST
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := peekPOST(t, r); p.Method != "" {
			mu.Lock()
			seen[p.Method] = r.Header.Clone()
			mu.Unlock()
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	m := mustStart(t, tools.Config{Servers: []tools.ServerConfig{{Name: "up", Transport: tools.TransportStreamableHTTP,
		URL: ts.URL + "/mcp", Headers: map[string]string{"X-Tenant": "blue", "Accept": "application/json, text/event-stream"}}}}, fastOptions(nil))

	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5, 6}, TraceFlags: trace.FlagsSampled})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)
	if _, err := m.Call(ctx, "up__echo_raw", json.RawMessage(`{"text":"hi"}`), tools.CallOptions{}); err != nil {
		t.Fatalf("Call: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	call, list := seen["tools/call"], seen["tools/list"]
	if call == nil || list == nil {
		t.Fatalf("upstream saw methods %v; want tools/list and tools/call", seen)
	}
	for _, h := range []string{"Mcp-Session-Id", "Mcp-Protocol-Version", "X-Tenant", "Accept", "Content-Type"} {
		if got, want := call.Values(h), list.Values(h); len(got) != 1 || got[0] != want[0] {
			t.Errorf("tools/call header %s = %q; want %q, as mcp-go sent with tools/list", h, got, want)
		}
	}
	if got := call.Get("Mcp-Protocol-Version"); got != mcp.LATEST_LEGACY_PROTOCOL_VERSION {
		t.Errorf("tools/call Mcp-Protocol-Version = %q; want %q", got, mcp.LATEST_LEGACY_PROTOCOL_VERSION)
	}
	if got, want := call.Get("Traceparent"), "00-"+sc.TraceID().String()+"-"+sc.SpanID().String()+"-01"; got != want {
		t.Errorf("tools/call traceparent = %q; want %q", got, want)
	}
}

// TestHTTPCallStream: an answer streamed as SSE is read as mcp-go reads it:
// notifications before the answer reach the call, a request of the
// upstream's is answered with a POST of its own, and a stream the upstream
// ends early, after an event id, is resumed with Last-Event-ID.
func TestHTTPCallStream(t *testing.T) {
	u := testupstream.New("up")
	inner := server.NewStreamableHTTPServer(u.Server)
	var (
		mu       sync.Mutex
		callID   json.RawMessage
		resumes  []string // Last-Event-ID of each resuming GET
		sessions []string // its Mcp-Session-Id
		accepts  []string // its Accept
		answered = make(chan json.RawMessage, 1)
	)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := peekPOST(t, r)
		switch {
		case p.Method == "tools/call" && p.Params.Name == "echo_raw":
			mu.Lock()
			callID = p.ID
			mu.Unlock()
			token, _ := json.Marshal(p.Params.Meta.ProgressToken)
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprintf(w, "id: ev-1\nretry: 10\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\n"+
				"data: \"params\":{\"progressToken\":%s,\"progress\":1,\"total\":2}}\n\n", token)
			fmt.Fprintf(w, "id: ev-2\ndata: {\"jsonrpc\":\"2.0\",\"id\":\"up-1\",\"method\":\"ping\"}\n\n")
			// The stream ends here, before the answer.
		case p.Method == "" && p.Result != nil:
			answered <- p.ID
			w.WriteHeader(http.StatusAccepted)
		case r.Method == http.MethodGet && r.Header.Get("Last-Event-ID") != "":
			mu.Lock()
			resumes = append(resumes, r.Header.Get("Last-Event-ID"))
			sessions = append(sessions, r.Header.Get("Mcp-Session-Id"))
			accepts = append(accepts, r.Header.Get("Accept"))
			id := callID
			mu.Unlock()
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprintf(w, "id: ev-3\ndata: {\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"resumed\"}]}}\n\n", id)
		default:
			inner.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(ts.Close)
	m := mustStart(t, tools.Config{Servers: []tools.ServerConfig{{Name: "up", Transport: tools.TransportStreamableHTTP, URL: ts.URL + "/mcp"}}}, fastOptions(nil))

	var progress atomic.Int64
	res, err := m.Call(context.Background(), "up__echo_raw", json.RawMessage(`{}`), tools.CallOptions{
		ProgressToken: "agent-7",
		OnProgress: func(p mcp.ProgressNotificationParams) {
			if p.ProgressToken == "agent-7" && p.Progress == 1 && p.Total == 2 {
				progress.Add(1)
			}
		},
	})
	if err != nil {
		t.Fatalf("Call: %v", err)
	}
	if got := text(t, res); got != "resumed" {
		t.Errorf("Call = %q; want the answer of the resumed stream", got)
	}
	if n := progress.Load(); n != 1 {
		t.Errorf("progress notifications passed back = %d; want 1", n)
	}
	select {
	case id := <-answered:
		if string(id) != `"up-1"` {
			t.Errorf("answer posted for id %s; want \"up-1\"", id)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("the upstream's ping on the stream was never answered")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(resumes) != 1 || resumes[0] != "ev-2" || sessions[0] == "" || accepts[0] != "text/event-stream" {
		t.Errorf("resuming GETs: Last-Event-ID %q, session %q, Accept %q; want one, after ev-2, on the session, accepting text/event-stream",
			resumes, sessions, accepts)
	}
}

// TestHTTPCallSessionForgotten: when the upstream forgets the session
// (404), the call fails and the connection is made again, after which
// calls work.
func TestHTTPCallSessionForgotten(t *testing.T) {
	u := testupstream.New("up")
	inner := server.NewStreamableHTTPServer(u.Server)
	var mu sync.Mutex
	forgotten := map[string]bool{}
	var forgetNext atomic.Bool
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("Mcp-Session-Id")
		p := peekPOST(t, r)
		mu.Lock()
		if p.Method == "tools/call" && forgetNext.CompareAndSwap(true, false) {
			forgotten[id] = true
		}
		gone := forgotten[id]
		mu.Unlock()
		if gone {
			http.Error(w, "unknown session", http.StatusNotFound)
			return
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	m := mustStart(t, tools.Config{Servers: []tools.ServerConfig{{Name: "up", Transport: tools.TransportStreamableHTTP, URL: ts.URL + "/mcp"}}}, fastOptions(nil))

	forgetNext.Store(true)
	_, err := m.Call(context.Background(), "up__echo_raw", json.RawMessage(`{}`), tools.CallOptions{})
	if ce := callErr(t, err); ce.Kind != tools.KindUnavailable {
		t.Fatalf("Call on a forgotten session = kind %q (%v); want %q", ce.Kind, err, tools.KindUnavailable)
	}
	eventually(t, "calls to work on a new session", func() bool {
		res, err := m.Call(context.Background(), "up__echo_raw", json.RawMessage(`{"n":1}`), tools.CallOptions{})
		return err == nil && text(t, res) == `{"n":1}`
	})
	if h := m.Health()[0]; h.Reconnects < 1 {
		t.Errorf("Health() = %+v; want a reconnect", h)
	}
}

// TestHTTPCallEndsWithManager: Close ends a call in flight to an HTTP
// upstream instead of leaving it to its deadline.
func TestHTTPCallEndsWithManager(t *testing.T) {
	_, url := startHTTP(t, "up")
	m, err := tools.New(tools.Config{Servers: []tools.ServerConfig{{Name: "up", Transport: tools.TransportStreamableHTTP, URL: url, Timeout: time.Minute}}}, fastOptions(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	running := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		_, err := m.Call(context.Background(), "up__wait", nil, tools.CallOptions{
			ProgressToken: 1,
			OnProgress:    func(mcp.ProgressNotificationParams) { running <- struct{}{} },
		})
		done <- err
	}()
	<-running
	if err := m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		if ce := callErr(t, err); ce.Kind != tools.KindUnavailable {
			t.Errorf("Call in flight at Close = kind %q (%v); want %q", ce.Kind, err, tools.KindUnavailable)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Call in flight at Close still running after 10s")
	}
}
