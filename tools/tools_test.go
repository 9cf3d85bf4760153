package tools_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/toolgate/toolgate/tools"
	"github.com/toolgate/toolgate/tools/internal/testupstream"
)

// allTransports starts one upstream per transport and a Manager over them.
func allTransports(t *testing.T, c *changes) (*tools.Manager, map[string]*testupstream.Upstream) {
	t.Helper()
	hu, hurl := startHTTP(t, "http")
	su, surl := startSSE(t, "sse")
	cfg := tools.Config{Servers: []tools.ServerConfig{
		{Name: "demo", Transport: tools.TransportBuiltin, Builtin: "demo"},
		stdioServer("stdio"),
		{Name: "http", Transport: tools.TransportStreamableHTTP, URL: hurl, Labels: []string{"internal"},
			ToolLabels: map[string][]string{"echo_*": {"untrusted_content", "internal"}}},
		{Name: "sse", Transport: tools.TransportSSE, URL: surl},
	}}
	return mustStart(t, cfg, fastOptions(c)), map[string]*testupstream.Upstream{"http": hu, "sse": su}
}

func TestCatalogKeepsRawSchemas(t *testing.T) {
	m, _ := allTransports(t, nil)
	for _, server := range []string{"stdio", "http", "sse"} {
		t.Run(server, func(t *testing.T) {
			name := server + "__echo_raw"
			tool, ok := m.Tool(name)
			if !ok {
				t.Fatalf("Tool(%q) missing; catalog: %v", name, toolNames(m.Tools()))
			}
			if tool.Server != server || tool.Upstream != "echo_raw" {
				t.Errorf("Tool(%q) = server %q upstream %q; want %q, echo_raw", name, tool.Server, tool.Upstream, server)
			}
			var raw struct {
				InputSchema json.RawMessage `json:"inputSchema"`
			}
			if err := json.Unmarshal(tool.Raw, &raw); err != nil {
				t.Fatal(err)
			}
			if !jsonEqual(t, raw.InputSchema, []byte(testupstream.EchoSchema)) {
				t.Errorf("Tool(%q).Raw inputSchema = %s; want %s", name, raw.InputSchema, testupstream.EchoSchema)
			}
			mt, err := tool.MCP()
			if err != nil {
				t.Fatalf("MCP(): %v", err)
			}
			b, err := json.Marshal(mt)
			if err != nil {
				t.Fatalf("marshal MCP(): %v", err)
			}
			var out struct {
				Name        string          `json:"name"`
				InputSchema json.RawMessage `json:"inputSchema"`
			}
			if err := json.Unmarshal(b, &out); err != nil {
				t.Fatal(err)
			}
			if out.Name != name || !jsonEqual(t, out.InputSchema, []byte(testupstream.EchoSchema)) {
				t.Errorf("MCP() marshals to name %q schema %s; want %q and the upstream's schema", out.Name, out.InputSchema, name)
			}
		})
	}
	t.Run("labels", func(t *testing.T) {
		for name, want := range map[string][]string{
			"http__echo_raw": {"internal", "untrusted_content"},
			"http__wait":     {"internal"},
			"sse__wait":      nil,
		} {
			tool, _ := m.Tool(name)
			if !slices.Equal(tool.Labels, want) {
				t.Errorf("Tool(%q).Labels = %v; want %v", name, tool.Labels, want)
			}
		}
	})
	t.Run("sorted", func(t *testing.T) {
		names := toolNames(m.Tools())
		if !slices.IsSorted(names) || len(names) < 4*6 {
			t.Errorf("Tools() = %v; want all tools of 4 servers, sorted", names)
		}
		for _, want := range []string{"demo__read_file", "demo__slow_count", "stdio__getenv", "sse__count"} {
			if !slices.Contains(names, want) {
				t.Errorf("Tools() lacks %q", want)
			}
		}
	})
}

func toolNames(ts []tools.Tool) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.Name)
	}
	return out
}

func TestCallForwardsRawArguments(t *testing.T) {
	m, _ := allTransports(t, nil)
	// 2^53+1 is not representable as a float64; the text is outside ASCII.
	args := `{"n":9007199254740993,"text":"héllo 日本語 🚀 \u00e9"}`
	for _, server := range []string{"stdio", "http", "sse"} {
		t.Run(server, func(t *testing.T) {
			res, err := m.Call(context.Background(), server+"__echo_raw", json.RawMessage(args), tools.CallOptions{})
			if err != nil {
				t.Fatalf("Call: %v", err)
			}
			if got := text(t, res); got != args {
				t.Errorf("upstream got arguments %s; want %s", got, args)
			}
		})
	}
}

func TestCallProgress(t *testing.T) {
	m, _ := allTransports(t, nil)
	// Minimums, not exact counts: mcp-go servers write notifications and
	// answers on different goroutines, so the last notification can trail the
	// answer, and toolgate drops progress that arrives after its call ended.
	tests := []struct {
		tool, args string
		min        int
	}{
		{tool: "stdio__count", args: `{"n":5}`, min: 4},
		{tool: "http__count", args: `{"n":5}`, min: 1},
		{tool: "sse__count", args: `{"n":5}`, min: 1},
		{tool: "demo__slow_count", args: `{"n":3,"delay_ms":20}`, min: 1},
	}
	for _, tt := range tests {
		t.Run(tt.tool, func(t *testing.T) {
			var mu sync.Mutex
			var got []mcp.ProgressNotificationParams
			_, err := m.Call(context.Background(), tt.tool, json.RawMessage(tt.args), tools.CallOptions{
				ProgressToken: "agent-token-7",
				OnProgress: func(p mcp.ProgressNotificationParams) {
					mu.Lock()
					got = append(got, p)
					mu.Unlock()
				},
			})
			if err != nil {
				t.Fatalf("Call(%q): %v", tt.tool, err)
			}
			mu.Lock()
			defer mu.Unlock()
			if n := len(got); n < tt.min || n > 5 {
				t.Fatalf("Call(%q) passed back %d progress notifications; want %d to 5", tt.tool, n, tt.min)
			}
			for i, p := range got { // stdio keeps order; HTTP may not
				if p.ProgressToken != "agent-token-7" {
					t.Errorf("progress[%d].ProgressToken = %v; want the agent's token", i, p.ProgressToken)
				}
				if strings.HasPrefix(tt.tool, "stdio") && i > 0 && p.Progress <= got[i-1].Progress {
					t.Errorf("progress[%d].Progress = %v after %v; want increasing", i, p.Progress, got[i-1].Progress)
				}
			}
		})
	}
	t.Run("no token asks for none", func(t *testing.T) {
		called := false
		_, err := m.Call(context.Background(), "stdio__count", json.RawMessage(`{"n":2}`), tools.CallOptions{
			OnProgress: func(mcp.ProgressNotificationParams) { called = true },
		})
		if err != nil || called {
			t.Errorf("Call without token: err %v, progress passed back %v; want nil, false", err, called)
		}
	})
}

func TestCallCancellationReachesUpstream(t *testing.T) {
	m, ups := allTransports(t, nil)
	for _, server := range []string{"stdio", "http", "sse"} {
		t.Run(server, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			_, err := m.Call(ctx, server+"__wait", nil, tools.CallOptions{
				ProgressToken: 1,
				// The upstream sends one progress notification once its handler runs.
				OnProgress: func(mcp.ProgressNotificationParams) { cancel() },
			})
			if ce := callErr(t, err); ce.Kind != tools.KindCanceled {
				t.Fatalf("Call(wait) cancelled = kind %q (%v); want %q", ce.Kind, err, tools.KindCanceled)
			}
			eventually(t, "the upstream handler to see its context end", func() bool {
				if u := ups[server]; u != nil {
					return u.Canceled.Load() >= 1
				}
				res, err := m.Call(context.Background(), server+"__cancel_count", nil, tools.CallOptions{})
				return err == nil && text(t, res) != "0"
			})
		})
	}
}

func TestCallErrors(t *testing.T) {
	hu, hurl := startHTTP(t, "slow")
	_ = hu
	cfg := tools.Config{Servers: []tools.ServerConfig{
		stdioServer("stdio"),
		{Name: "slow", Transport: tools.TransportStreamableHTTP, URL: hurl, Timeout: 100 * time.Millisecond},
	}}
	m := mustStart(t, cfg, fastOptions(nil))
	tests := []struct {
		tool     string
		wantKind string
		wantCode int
		wantMsg  string
	}{
		{tool: "nope__x", wantKind: tools.KindUnknownTool, wantMsg: `tool "nope__x": unknown tool`},
		{tool: "slow__wait", wantKind: tools.KindTimeout, wantMsg: `upstream "slow" tool "wait": timeout after 100ms`},
		{tool: "stdio__fail", wantKind: tools.KindUpstreamError, wantCode: mcp.INTERNAL_ERROR, wantMsg: "fail always fails"},
	}
	for _, tt := range tests {
		t.Run(tt.tool, func(t *testing.T) {
			_, err := m.Call(context.Background(), tt.tool, nil, tools.CallOptions{})
			ce := callErr(t, err)
			if ce.Kind != tt.wantKind || ce.Code != tt.wantCode || !strings.Contains(ce.Error(), tt.wantMsg) {
				t.Errorf("Call(%q) = kind %q code %d %q; want kind %q code %d containing %q", tt.tool, ce.Kind, ce.Code, ce.Error(), tt.wantKind, tt.wantCode, tt.wantMsg)
			}
		})
	}
	t.Run("timeout cancels the upstream", func(t *testing.T) {
		eventually(t, "the timed-out handler to end", func() bool { return hu.Canceled.Load() >= 1 })
	})
	t.Run("isError is a result", func(t *testing.T) {
		res, err := m.Call(context.Background(), "stdio__tool_error", nil, tools.CallOptions{})
		if err != nil || !res.IsError || res.Meta != nil || res.ResultType != "" {
			t.Errorf("Call(tool_error) = %+v, %v; want an isError result without _meta or resultType", res, err)
		}
	})
}

func TestUnavailableServerDoesNotBlockOthers(t *testing.T) {
	cfg := tools.Config{Servers: []tools.ServerConfig{
		{Name: "ghost", Transport: tools.TransportStdio, Command: "/nonexistent/toolgate-no-such-server"},
		{Name: "demo", Transport: tools.TransportBuiltin, Builtin: "demo"},
	}}
	m, err := start(t, cfg, fastOptions(nil))
	if err == nil || !strings.Contains(err.Error(), `server "ghost" is down`) {
		t.Fatalf("Start() = %v; want an error naming server ghost", err)
	}
	if _, ok := m.Tool("demo__read_file"); !ok {
		t.Errorf("Tool(demo__read_file) missing while ghost is down")
	}
	h := m.Health()
	if len(h) != 2 || h[0].State != tools.StateDown || h[0].LastError == "" || h[1].State != tools.StateReady || h[1].Tools != 8 {
		t.Errorf("Health() = %+v; want ghost down with an error, demo ready with 8 tools", h)
	}
	_, err = m.Call(context.Background(), "ghost__x", nil, tools.CallOptions{})
	if ce := callErr(t, err); ce.Kind != tools.KindUnknownTool {
		t.Errorf("Call(ghost__x) kind = %q; want %q", ce.Kind, tools.KindUnknownTool)
	}
}

func TestReconnectAfterUpstreamRestart(t *testing.T) {
	c := newChanges()
	var r restartableHTTP
	r.start(t, testupstream.New("flaky"))
	cfg := tools.Config{Servers: []tools.ServerConfig{{Name: "flaky", Transport: tools.TransportStreamableHTTP, URL: r.url()}}}
	m := mustStart(t, cfg, fastOptions(c))
	if _, ok := m.Tool("flaky__echo_raw"); !ok {
		t.Fatalf("Tool(flaky__echo_raw) missing after Start")
	}

	r.stop()
	eventually(t, "the server to be reported down", func() bool { return m.Health()[0].State == tools.StateDown })
	if _, ok := m.Tool("flaky__echo_raw"); ok {
		t.Errorf("Tool(flaky__echo_raw) still offered while its server is down")
	}
	_, err := m.Call(context.Background(), "flaky__echo_raw", json.RawMessage(`{}`), tools.CallOptions{})
	if err == nil {
		t.Errorf("Call while down succeeded; want an error")
	}

	c.mu.Lock()
	before := c.n
	c.mu.Unlock()
	u2 := testupstream.New("flaky")
	u2.Server.AddTool(mcp.NewTool("new_after_restart"), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return mcp.NewToolResultText("ok"), nil
	})
	r.start(t, u2)
	eventually(t, "the new tool after reconnect", func() bool {
		_, ok := m.Tool("flaky__new_after_restart")
		return ok
	})
	c.mu.Lock()
	after := c.n
	c.mu.Unlock()
	if after <= before {
		t.Errorf("OnChange calls = %d after reconnect; want more than %d", after, before)
	}
	h := m.Health()[0]
	if h.State != tools.StateReady || h.Reconnects != 1 || h.LastError != "" {
		t.Errorf("Health() = %+v; want ready, 1 reconnect, no error", h)
	}
	res, err := m.Call(context.Background(), "flaky__new_after_restart", nil, tools.CallOptions{})
	if err != nil || text(t, res) != "ok" {
		t.Errorf("Call after reconnect = %v, %v; want ok", res, err)
	}
}

func TestListChangedUpdatesCatalog(t *testing.T) {
	for _, server := range []string{"stdio", "http", "sse", "demo"} {
		if server == "demo" {
			continue // the demo server's list never changes
		}
		t.Run(server, func(t *testing.T) {
			c := newChanges()
			m, _ := allTransports(t, c)
			name := "added_" + server
			if _, err := m.Call(context.Background(), server+"__add_tool", json.RawMessage(`{"name":"`+name+`"}`), tools.CallOptions{}); err != nil {
				t.Fatalf("Call(add_tool): %v", err)
			}
			eventually(t, "the added tool in the catalog", func() bool {
				_, ok := m.Tool(server + "__" + name)
				return ok
			})
			select {
			case <-c.ch:
			default:
				t.Errorf("OnChange not called after the catalog changed")
			}
		})
	}
}

func TestNamingProblemsAreReported(t *testing.T) {
	// "a" + "__" + "__x" and "a_" + "__" + "_x" are both "a____x".
	ua := testupstream.New("a")
	ua.Server.AddTool(mcp.NewTool("__x"), nil)
	ua.Server.AddTool(mcp.NewTool("has space"), nil)
	ub := testupstream.New("b")
	ub.Server.AddTool(mcp.NewTool("_x"), nil)
	sa := httptest.NewServer(server.NewStreamableHTTPServer(ua.Server))
	defer sa.Close()
	sb := httptest.NewServer(server.NewStreamableHTTPServer(ub.Server))
	defer sb.Close()
	cfg := tools.Config{Servers: []tools.ServerConfig{
		{Name: "a", Transport: tools.TransportStreamableHTTP, URL: sa.URL + "/mcp"},
		{Name: "a_", Transport: tools.TransportStreamableHTTP, URL: sb.URL + "/mcp"},
	}}
	m, err := start(t, cfg, fastOptions(nil))
	for _, want := range []string{
		`server "a_" tool "_x": name "a____x" collides with tool "__x" of server "a"`,
		`server "a" tool "has space": namespaced name "a__has space" is invalid`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Start() = %v; want it to contain %q", err, want)
		}
	}
	if tool, ok := m.Tool("a____x"); !ok || tool.Server != "a" {
		t.Errorf("Tool(a____x) = %+v, %v; want the first server's tool", tool, ok)
	}
	if _, ok := m.Tool("a__has space"); ok {
		t.Errorf("Tool(%q) offered; want it left out", "a__has space")
	}
	if _, ok := m.Tool("a___echo_raw"); !ok {
		t.Errorf("the other tools of a_ are missing")
	}
}

func TestSecretsComeFromEnvironment(t *testing.T) {
	t.Setenv("TOOLGATE_TEST_UNRELATED_SECRET", "must-not-leak")
	var gotAuth atomic.Value
	u := testupstream.New("h")
	h := server.NewStreamableHTTPServer(u.Server)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuth.Store(r.Header.Get("Authorization") + "|" + r.Header.Get("X-Team"))
		h.ServeHTTP(w, r)
	}))
	defer ts.Close()
	env := map[string]string{"UPSTREAM_TOKEN": "Bearer s3cr3t", "CHILD_SECRET_SRC": "child-value"}
	opts := fastOptions(nil)
	opts.LookupEnv = func(name string) (string, bool) { v, ok := env[name]; return v, ok }
	st := stdioServer("stdio")
	st.EnvFrom = map[string]string{"CHILD_SECRET": "CHILD_SECRET_SRC"}
	cfg := tools.Config{Servers: []tools.ServerConfig{
		st,
		{Name: "h", Transport: tools.TransportStreamableHTTP, URL: ts.URL + "/mcp",
			Headers: map[string]string{"X-Team": "blue"}, HeadersFromEnv: map[string]string{"Authorization": "UPSTREAM_TOKEN"}},
		{Name: "missing", Transport: tools.TransportStreamableHTTP, URL: ts.URL + "/mcp",
			HeadersFromEnv: map[string]string{"Authorization": "NOT_SET_ANYWHERE"}},
	}}
	m, err := start(t, cfg, opts)
	if err == nil || !strings.Contains(err.Error(), "NOT_SET_ANYWHERE is not set") {
		t.Errorf("Start() = %v; want an error naming the unset variable", err)
	}
	if got, _ := gotAuth.Load().(string); got != "Bearer s3cr3t|blue" {
		t.Errorf("upstream saw headers %q; want %q", got, "Bearer s3cr3t|blue")
	}
	for name, want := range map[string]string{
		"CHILD_SECRET":                   "true:child-value",
		"TESTUPSTREAM_NAME":              "true:stdio",
		"TOOLGATE_TEST_UNRELATED_SECRET": "false:",
	} {
		res, err := m.Call(context.Background(), "stdio__getenv", json.RawMessage(`{"name":"`+name+`"}`), tools.CallOptions{})
		if err != nil {
			t.Fatalf("Call(getenv %s): %v", name, err)
		}
		if got := text(t, res); got != want {
			t.Errorf("child getenv(%q) = %q; want %q", name, got, want)
		}
	}
}

func TestResourcesAndPrompts(t *testing.T) {
	_, u1 := startHTTP(t, "one")
	_, u2 := startHTTP(t, "dup")
	_, u3 := startSSE(t, "dup")
	cfg := tools.Config{Servers: []tools.ServerConfig{
		{Name: "demo", Transport: tools.TransportBuiltin, Builtin: "demo"},
		{Name: "one", Transport: tools.TransportStreamableHTTP, URL: u1},
		{Name: "dup1", Transport: tools.TransportStreamableHTTP, URL: u2},
		{Name: "dup2", Transport: tools.TransportSSE, URL: u3},
	}}
	m := mustStart(t, cfg, fastOptions(nil))

	var names []string
	for _, r := range m.Resources() {
		names = append(names, r.Name+"="+r.URI)
	}
	for _, want := range []string{"demo__sandbox_readme=demo://sandbox/README.txt", "one__static=test://one/static"} {
		if !slices.Contains(names, want) {
			t.Errorf("Resources() = %v; want %q", names, want)
		}
	}
	var tmpl []string
	for _, r := range m.ResourceTemplates() {
		tmpl = append(tmpl, r.Name+"="+r.URITemplate)
	}
	if !slices.Contains(tmpl, "one__item=test://one/items/{id}") {
		t.Errorf("ResourceTemplates() = %v; want one__item", tmpl)
	}

	tests := []struct {
		uri, want, wantErr string
	}{
		{uri: "test://one/static", want: "static of one"},
		{uri: "test://one/items/42", want: "item at test://one/items/42"},
		{uri: "demo://sandbox/README.txt", want: "demo sandbox"},
		{uri: "demo://files/notes/todo.md", wantErr: "no server offers it"}, // {path} does not match "/"
		{uri: "demo://files/README.txt", want: "demo sandbox"},
		{uri: "test://dup/static", wantErr: `servers "dup1" and "dup2" all offer it`},
		{uri: "test://nowhere", wantErr: "no server offers it"},
	}
	for _, tt := range tests {
		t.Run(tt.uri, func(t *testing.T) {
			res, err := m.ReadResource(context.Background(), tt.uri)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("ReadResource(%q) = %v; want error containing %q", tt.uri, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ReadResource(%q): %v", tt.uri, err)
			}
			tc, ok := res.Contents[0].(mcp.TextResourceContents)
			if !ok || !strings.Contains(tc.Text, tt.want) {
				t.Errorf("ReadResource(%q) = %+v; want text containing %q", tt.uri, res.Contents, tt.want)
			}
		})
	}

	var prompts []string
	for _, p := range m.Prompts() {
		prompts = append(prompts, p.Name)
	}
	if !slices.Contains(prompts, "demo__incident_review") || !slices.Contains(prompts, "one__greet") {
		t.Errorf("Prompts() = %v; want demo__incident_review and one__greet", prompts)
	}
	res, err := m.GetPrompt(context.Background(), "one__greet", map[string]string{"who": "Ada"})
	if err != nil {
		t.Fatalf("GetPrompt: %v", err)
	}
	if tc, _ := res.Messages[0].Content.(mcp.TextContent); tc.Text != "hello Ada from one" {
		t.Errorf("GetPrompt(one__greet) = %+v; want hello Ada from one", res.Messages)
	}
	if _, err := m.GetPrompt(context.Background(), "one__nope", nil); err == nil {
		t.Errorf("GetPrompt(one__nope) succeeded; want an error")
	}
}

func TestStdioUpstreamKilledIsRespawned(t *testing.T) {
	c := newChanges()
	m := mustStart(t, tools.Config{Servers: []tools.ServerConfig{stdioServer("stdio")}}, fastOptions(c))
	pidOf := func() (int, error) {
		res, err := m.Call(context.Background(), "stdio__pid", nil, tools.CallOptions{})
		if err != nil {
			return 0, err
		}
		return strconv.Atoi(text(t, res))
	}
	pid, err := pidOf()
	if err != nil {
		t.Fatalf("pid: %v", err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill %d: %v", pid, err)
	}
	eventually(t, "a new child process", func() bool {
		h := m.Health()[0]
		if h.State != tools.StateReady || h.Reconnects != 1 {
			return false
		}
		p, err := pidOf()
		return err == nil && p != pid
	})
	c.mu.Lock()
	n := c.n
	c.mu.Unlock()
	// Ready at start, gone when killed, back when respawned.
	if n < 3 {
		t.Errorf("OnChange called %d times; want at least 3", n)
	}
}

func BenchmarkCall(b *testing.B) {
	cfg := tools.Config{Servers: []tools.ServerConfig{
		{Name: "demo", Transport: tools.TransportBuiltin, Builtin: "demo"},
		stdioServer("stdio"),
	}}
	m, err := tools.New(cfg, tools.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	if err := m.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct{ name, tool, args string }{
		{"inprocess", "demo__read_secret", `{"name":"payments/api_key"}`},
		{"stdio", "stdio__echo_raw", `{"n":9007199254740993,"text":"héllo"}`},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := m.Call(context.Background(), tc.tool, json.RawMessage(tc.args), tools.CallOptions{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
