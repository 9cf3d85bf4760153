package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/sessions"
	"github.com/toolgate/toolgate/tools"
)

// testEnv is a gateway in front of four upstreams: the built-in demo
// server, the test upstream over stdio (a subprocess), over Streamable HTTP
// and over SSE.
// testKeys are the agents' API keys, by the variable the config names.
var testKeys = map[string]string{"KEY1": "key-of-agent-one-0123456789", "KEY2": "key-of-agent-two-0123456789"}

type testEnv struct {
	store   sessions.Store
	url     string // the gateway's base URL
	manager *tools.Manager
	httpRec *upstreamRecorder
	sseRec  *upstreamRecorder
	httpUp  *restartableServer
}

// restartableServer serves an MCP upstream over Streamable HTTP on a fixed
// address, and can be killed and started again on that address.
type restartableServer struct {
	t    *testing.T
	addr string
	rec  *upstreamRecorder
	mu   sync.Mutex
	srv  *http.Server
}

func (s *restartableServer) start() {
	s.t.Helper()
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		s.t.Fatalf("listen %s: %v", s.addr, err)
	}
	s.addr = ln.Addr().String()
	mux := http.NewServeMux()
	mux.Handle("/mcp", server.NewStreamableHTTPServer(newUpstream(s.rec)))
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
}

func (s *restartableServer) kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.srv.Close()
}

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	env := &testEnv{httpRec: newRecorder(), sseRec: newRecorder()}

	env.httpUp = &restartableServer{t: t, addr: "127.0.0.1:0", rec: env.httpRec}
	env.httpUp.start()
	t.Cleanup(env.httpUp.kill)

	sseMux := http.NewServeMux()
	sseTS := httptest.NewServer(sseMux)
	t.Cleanup(sseTS.Close)
	sse := server.NewSSEServer(newUpstream(env.sseRec), server.WithBaseURL(sseTS.URL))
	sseMux.Handle("/", sse)

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg := tools.Config{Servers: []tools.ServerConfig{
		{Name: "demo", Transport: "builtin", Builtin: "demo"},
		{Name: "stdio", Transport: "stdio", Command: exe, Env: map[string]string{stdioServerEnv: "1"}, Timeout: 10 * time.Second},
		{Name: "web", Transport: "streamable-http", URL: "http://" + env.httpUp.addr + "/mcp", Timeout: 10 * time.Second},
		{Name: "legacy", Transport: "sse", URL: sseTS.URL + "/sse", Timeout: 10 * time.Second},
	}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	var gw *gateway.Gateway
	var gwMu sync.Mutex
	m, err := tools.New(cfg, tools.Options{
		Logger:         testLogger(t),
		InitialBackoff: 20 * time.Millisecond,
		MaxBackoff:     200 * time.Millisecond,
		HealthInterval: 100 * time.Millisecond,
		OnChange: func() {
			gwMu.Lock()
			defer gwMu.Unlock()
			if gw != nil {
				gw.Sync()
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	auth, err := gateway.NewAuthenticator(gateway.IdentityConfig{APIKeys: []gateway.APIKeyConfig{
		{Agent: "agent-1", Profile: "default", KeyEnv: "KEY1"},
		{Agent: "agent-2", Profile: "default", KeyEnv: "KEY2"},
	}}, func(name string) (string, bool) { v, ok := testKeys[name]; return v, ok }, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	env.store = sessions.NewMemory(sessions.Options{})
	g, err := gateway.New(gateway.Config{}, m, gateway.Options{Logger: testLogger(t), Store: env.store, Auth: auth,
		Profiles: map[string]*gateway.ProfileConfig{"default": {Tools: []string{"*"}}}})
	if err != nil {
		t.Fatal(err)
	}
	gwMu.Lock()
	gw = g
	gwMu.Unlock()
	g.Sync()
	ts := httptest.NewServer(g.Handler())
	t.Cleanup(ts.Close)
	env.url = ts.URL
	env.manager = m
	return env
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// agent connects an mcp-go client to the gateway. kind is "sse" or a
// protocol revision for Streamable HTTP ("" for the newest).
func (env *testEnv) agent(t *testing.T, kind string, onNote func(mcp.JSONRPCNotification)) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var c *client.Client
	if kind == "sse" {
		var err error
		c, err = client.NewSSEMCPClient(env.url+"/sse", client.WithHeaders(map[string]string{"Authorization": "Bearer " + testKeys["KEY1"]}))
		if err != nil {
			t.Fatal(err)
		}
	} else {
		trOpts := []transport.StreamableHTTPCOption{transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer " + testKeys["KEY1"]})}
		if kind != "" {
			// A listening GET stream is a legacy-protocol feature.
			trOpts = append(trOpts, transport.WithContinuousListening())
		}
		tr, err := transport.NewStreamableHTTP(env.url+"/mcp", trOpts...)
		if err != nil {
			t.Fatal(err)
		}
		var opts []client.ClientOption
		if kind != "" {
			opts = append(opts, client.WithProtocolVersion(kind))
		}
		c = client.NewClient(tr, opts...)
	}
	if onNote != nil {
		c.OnNotification(onNote)
	}
	// The SSE transport's stream lives as long as the context given to
	// Start, so that one must outlive this helper.
	streamCtx, stopStream := context.WithCancel(context.Background())
	if err := c.Start(streamCtx); err != nil {
		stopStream()
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = c.Close(); stopStream() })
	init := mcp.InitializeRequest{}
	init.Params.ClientInfo = mcp.Implementation{Name: "toolgate-test", Version: "1"}
	if _, err := c.Initialize(ctx, init); err != nil {
		t.Fatalf("Initialize(%s): %v", kind, err)
	}
	return c
}

func callRaw(t *testing.T, c *client.Client, name string, args string) *mcp.CallToolResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	req := mcp.CallToolRequest{}
	req.Params.Name = name
	req.Params.Arguments = json.RawMessage(args)
	res, err := c.CallTool(ctx, req)
	if err != nil {
		t.Fatalf("CallTool(%s): %v", name, err)
	}
	return res
}

func resultText(r *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range r.Content {
		if tc, ok := c.(mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

// sameJSON reports whether a and b hold the same JSON value, comparing
// numbers by their exact text.
func sameJSON(t *testing.T, a, b []byte) bool {
	t.Helper()
	decode := func(data []byte) any {
		d := json.NewDecoder(bytes.NewReader(data))
		d.UseNumber()
		var v any
		if err := d.Decode(&v); err != nil {
			t.Fatalf("decode %s: %v", data, err)
		}
		return v
	}
	return reflect.DeepEqual(decode(a), decode(b))
}

func TestEveryTransportAndRevision(t *testing.T) {
	env := newTestEnv(t)
	for _, kind := range []string{"", mcp.ProtocolVersion20251125, mcp.ProtocolVersion20250618, mcp.ProtocolVersion20250326, "sse"} {
		name := kind
		if name == "" {
			name = "newest"
		}
		t.Run(name, func(t *testing.T) {
			c := env.agent(t, kind, nil)
			if want := kind; want != "" && want != "sse" && c.ProtocolVersion() != want {
				t.Errorf("negotiated %q; want %q", c.ProtocolVersion(), want)
			}
			if kind == "" && c.ProtocolVersion() != mcp.ProtocolVersion20260728 {
				t.Errorf("negotiated %q; want %q", c.ProtocolVersion(), mcp.ProtocolVersion20260728)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			list, err := c.ListTools(ctx, mcp.ListToolsRequest{})
			if err != nil {
				t.Fatalf("ListTools: %v", err)
			}
			names := map[string]bool{}
			for _, tool := range list.Tools {
				names[tool.Name] = true
			}
			for _, want := range []string{"demo__read_file", "demo__deploy", "stdio__echo", "web__echo", "legacy__echo", "web__progress"} {
				if !names[want] {
					t.Errorf("tools/list lacks %q (got %v)", want, names)
				}
			}
			for _, tool := range []string{"stdio__echo", "web__echo", "legacy__echo"} {
				res := callRaw(t, c, tool, `{"s":"hi"}`)
				if res.IsError || !sameJSON(t, []byte(resultText(res)), []byte(`{"s":"hi"}`)) {
					t.Errorf("%s returned %+v; want the arguments echoed", tool, res)
				}
			}
			if err := c.Ping(ctx); err != nil {
				t.Errorf("Ping: %v", err)
			}
		})
	}
}

func TestDemoServerThroughGateway(t *testing.T) {
	env := newTestEnv(t)
	c := env.agent(t, "", nil)
	res := callRaw(t, c, "demo__list_files", `{}`)
	if res.IsError {
		t.Fatalf("demo__list_files failed: %s", resultText(res))
	}
	res = callRaw(t, c, "demo__read_file", `{"path":"../../etc/passwd"}`)
	if !res.IsError {
		t.Errorf("demo__read_file outside the sandbox = %q; want a tool error", resultText(res))
	}
}

// TestSchemasListedUnchanged compares the gateway's tools/list with the
// upstream's own, as raw JSON.
func TestSchemasListedUnchanged(t *testing.T) {
	env := newTestEnv(t)
	rawTools := func(url string) map[string]json.RawMessage {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		tr, err := transport.NewStreamableHTTP(url, transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer " + testKeys["KEY1"]}))
		if err != nil {
			t.Fatal(err)
		}
		c := client.NewClient(tr, client.WithProtocolVersion(mcp.ProtocolVersion20251125))
		if err := c.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Initialize(ctx, mcp.InitializeRequest{}); err != nil {
			t.Fatal(err)
		}
		resp, err := c.GetTransport().SendRequest(ctx, transport.JSONRPCRequest{JSONRPC: "2.0", ID: mcp.NewRequestId(int64(99)), Method: "tools/list"})
		if err != nil {
			t.Fatal(err)
		}
		var list struct {
			Tools []json.RawMessage `json:"tools"`
		}
		if err := json.Unmarshal(resp.Result, &list); err != nil {
			t.Fatal(err)
		}
		out := map[string]json.RawMessage{}
		for _, raw := range list.Tools {
			var tool struct {
				Name string `json:"name"`
			}
			_ = json.Unmarshal(raw, &tool)
			out[tool.Name] = raw
		}
		return out
	}
	direct := rawTools("http://" + env.httpUp.addr + "/mcp")
	through := rawTools(env.url + "/mcp")
	for name, raw := range direct {
		got, ok := through["web__"+name]
		if !ok {
			t.Errorf("tool %q missing through the gateway", name)
			continue
		}
		var a, b map[string]json.RawMessage
		_ = json.Unmarshal(raw, &a)
		_ = json.Unmarshal(got, &b)
		delete(a, "name")
		delete(b, "name")
		for _, key := range []string{"inputSchema", "outputSchema", "description", "annotations"} {
			if len(a[key]) == 0 && len(b[key]) == 0 {
				continue
			}
			if len(a[key]) == 0 || len(b[key]) == 0 || !sameJSON(t, a[key], b[key]) {
				t.Errorf("tool %q %s through the gateway = %s; want %s", name, key, b[key], a[key])
			}
		}
	}
	if !sameJSON(t, mustField(t, through["web__echo"], "inputSchema"), []byte(richSchema)) {
		t.Errorf("web__echo schema = %s; want %s", mustField(t, through["web__echo"], "inputSchema"), richSchema)
	}
}

func mustField(t *testing.T, obj json.RawMessage, key string) json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(obj, &m); err != nil {
		t.Fatalf("decode %s: %v", obj, err)
	}
	return m[key]
}

// TestArgumentsUnchanged sends an integer above 2^53 and non-ASCII text
// and checks what each upstream received.
func TestArgumentsUnchanged(t *testing.T) {
	env := newTestEnv(t)
	c := env.agent(t, "", nil)
	const args = `{"n":9007199254740993,"s":"Grüße, 世界 — ✓ \u0000","mode":"a"}`
	for _, tool := range []string{"stdio__echo", "web__echo", "legacy__echo"} {
		res := callRaw(t, c, tool, args)
		if res.IsError {
			t.Fatalf("%s: %s", tool, resultText(res))
		}
		got := resultText(res)
		if !sameJSON(t, []byte(got), []byte(args)) || !strings.Contains(got, "9007199254740993") {
			t.Errorf("%s received %s; want %s", tool, got, args)
		}
	}
	for name, rec := range map[string]*upstreamRecorder{"web": env.httpRec, "legacy": env.sseRec} {
		if got := rec.lastArgs(); !sameJSON(t, got, []byte(args)) {
			t.Errorf("upstream %s recorded %s; want %s", name, got, args)
		}
	}
}

func TestProgressAndCancellation(t *testing.T) {
	env := newTestEnv(t)
	for _, kind := range []string{mcp.ProtocolVersion20251125, ""} {
		t.Run("progress/"+kind, func(t *testing.T) {
			var mu sync.Mutex
			var got []float64
			c := env.agent(t, kind, func(n mcp.JSONRPCNotification) {
				if n.Method != "notifications/progress" {
					return
				}
				mu.Lock()
				defer mu.Unlock()
				if n.Params.AdditionalFields["progressToken"] == "tok-1" {
					p, _ := n.Params.AdditionalFields["progress"].(float64)
					got = append(got, p)
				}
			})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			req := mcp.CallToolRequest{}
			req.Params.Name = "web__progress"
			req.Params.Arguments = map[string]any{"steps": 4}
			req.Params.Meta = &mcp.Meta{ProgressToken: "tok-1"}
			res, err := c.CallTool(ctx, req)
			if err != nil || res.IsError {
				t.Fatalf("CallTool: %v %+v", err, res)
			}
			deadline := time.Now().Add(2 * time.Second)
			for {
				mu.Lock()
				n := len(got)
				mu.Unlock()
				if n >= 3 || time.Now().After(deadline) {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			mu.Lock()
			defer mu.Unlock()
			// The last notification can race the response (notes/mcp-go.md
			// pitfall 7); the steps before it must all arrive, in order.
			if len(got) < 3 {
				t.Fatalf("progress notifications = %v; want at least steps 1..3", got)
			}
			for i := 1; i < len(got); i++ {
				if got[i] <= got[i-1] {
					t.Errorf("progress out of order: %v", got)
				}
			}
		})
	}
	t.Run("cancellation", func(t *testing.T) {
		c := env.agent(t, "", nil)
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		req := mcp.CallToolRequest{}
		req.Params.Name = "web__block"
		if _, err := c.CallTool(ctx, req); err == nil {
			t.Fatal("CallTool(web__block) returned before being cancelled")
		}
		select {
		case <-env.httpRec.cancelled:
		case <-time.After(5 * time.Second):
			t.Fatal("the upstream never saw the cancellation")
		}
	})
}

func TestUpstreamFailureNamesServerAndTool(t *testing.T) {
	env := newTestEnv(t)
	c := env.agent(t, "", nil)
	for _, tool := range []string{"web__fail", "stdio__fail", "legacy__fail"} {
		res := callRaw(t, c, tool, `{}`)
		text := resultText(res)
		up, name, _ := strings.Cut(tool, "__")
		if !res.IsError || !strings.Contains(text, `"`+up+`"`) || !strings.Contains(text, `"`+name+`"`) || !strings.Contains(text, "disk on fire") {
			t.Errorf("%s = %+v %q; want a tool error naming server %q, tool %q and the cause", tool, res.IsError, text, up, name)
		}
	}
}

func TestUpstreamKilledAndRestarted(t *testing.T) {
	env := newTestEnv(t)
	changed := make(chan struct{}, 16)
	c := env.agent(t, mcp.ProtocolVersion20251125, func(n mcp.JSONRPCNotification) {
		if n.Method == string(mcp.MethodNotificationToolsListChanged) {
			changed <- struct{}{}
		}
	})
	// A call in flight when the upstream dies fails with an answer naming it.
	done := make(chan *mcp.CallToolResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		req := mcp.CallToolRequest{}
		req.Params.Name = "web__block"
		res, err := c.CallTool(ctx, req)
		if err != nil {
			res = mcp.NewToolResultError("client error: " + err.Error())
		}
		done <- res
	}()
	time.Sleep(200 * time.Millisecond) // lets the call reach the upstream
	env.httpUp.kill()
	select {
	case res := <-done:
		if !res.IsError || !strings.Contains(resultText(res), `"web"`) {
			t.Errorf("in-flight call on a killed upstream = %q; want a tool error naming server \"web\"", resultText(res))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("in-flight call never ended after its upstream died")
	}
	// The others keep working while it is down.
	if res := callRaw(t, c, "stdio__echo", `{"x":1}`); res.IsError {
		t.Errorf("stdio__echo while web is down: %s", resultText(res))
	}
	env.httpUp.start()
	// The agent is told the catalog changed (the tools left when the
	// upstream died and return now); once web__echo is listed, it works.
	deadline := time.After(15 * time.Second)
	for listed := false; !listed; {
		select {
		case <-changed:
		case <-deadline:
			t.Fatal("no notifications/tools/list_changed bringing web__echo back")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		list, err := c.ListTools(ctx, mcp.ListToolsRequest{})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		for _, tool := range list.Tools {
			listed = listed || tool.Name == "web__echo"
		}
	}
	if res := callRaw(t, c, "web__echo", `{"back":true}`); res.IsError {
		t.Fatalf("web__echo after restart: %s", resultText(res))
	}
}

func TestResourcesAndPrompts(t *testing.T) {
	env := newTestEnv(t)
	c := env.agent(t, "", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	list, err := c.ListResources(ctx, mcp.ListResourcesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range list.Resources {
		if r.Name == "web__readme" && r.URI == "test://readme" {
			found = true
		}
	}
	if !found {
		t.Errorf("resources/list = %+v; want web__readme at test://readme", list.Resources)
	}
	// The same URI is served by three upstreams here: reading it must name
	// them instead of picking one.
	req := mcp.ReadResourceRequest{}
	req.Params.URI = "test://readme"
	if _, err := c.ReadResource(ctx, req); err == nil {
		t.Error("reading a URI three upstreams claim succeeded; want an error naming them")
	}
	pr := mcp.GetPromptRequest{}
	pr.Params.Name = "web__greet"
	pr.Params.Arguments = map[string]string{"who": "Ada"}
	got, err := c.GetPrompt(ctx, pr)
	if err != nil {
		t.Fatalf("GetPrompt: %v", err)
	}
	if len(got.Messages) != 1 || !strings.Contains(got.Messages[0].Content.(mcp.TextContent).Text, "Hello, Ada") {
		t.Errorf("GetPrompt(web__greet) = %+v; want the upstream's greeting", got)
	}
}

// TestBadInputRefused posts malformed messages straight to the endpoints:
// each gets a JSON-RPC error and nothing reaches an upstream.
func TestBadInputRefused(t *testing.T) {
	env := newTestEnv(t)
	call := func(params string) string {
		return `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":` + params + `}`
	}
	tests := []struct {
		name   string
		body   string
		status int
		code   int
	}{
		{"malformed", `{"jsonrpc":"2.0","id":7,"method":`, 400, -32700},
		{"batch", `[` + call(`{"name":"web__echo","arguments":{}}`) + `]`, 400, -32600},
		{"duplicate name", call(`{"name":"web__fail","name":"web__echo","arguments":{}}`), 400, -32700},
		{"case-variant name", call(`{"name":"web__fail","Name":"web__echo","arguments":{}}`), 400, -32700},
		{"case-variant argument", call(`{"name":"web__echo","arguments":{"path":"a","Path":"b"}}`), 400, -32700},
		{"oversized", call(`{"name":"web__echo","arguments":{"s":"` + strings.Repeat("x", gateway.DefaultMaxBodyBytes) + `"}}`), 413, -32600},
		{"not json-rpc", `{"hello":"world"}`, 400, -32600},
	}
	for _, path := range []string{"/mcp", "/message?sessionId=whatever"} {
		for _, tt := range tests {
			t.Run(path+"/"+tt.name, func(t *testing.T) {
				env.httpRec.mu.Lock()
				before := env.httpRec.calls
				env.httpRec.mu.Unlock()
				req, _ := http.NewRequest(http.MethodPost, env.url+path, strings.NewReader(tt.body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer "+testKeys["KEY1"])
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				var msg struct {
					Error struct {
						Code    int    `json:"code"`
						Message string `json:"message"`
					} `json:"error"`
				}
				if err := json.Unmarshal(body, &msg); err != nil {
					t.Fatalf("answer is not JSON-RPC: %s", body)
				}
				if resp.StatusCode != tt.status || msg.Error.Code != tt.code || msg.Error.Message == "" {
					t.Errorf("POST %s = %d %s; want %d with code %d", tt.name, resp.StatusCode, body, tt.status, tt.code)
				}
				env.httpRec.mu.Lock()
				after := env.httpRec.calls
				env.httpRec.mu.Unlock()
				if after != before {
					t.Errorf("the upstream received %d calls from a refused message", after-before)
				}
			})
		}
	}
}
