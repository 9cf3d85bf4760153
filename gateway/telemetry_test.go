package gateway_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/internal/audit"
	"github.com/toolgate/toolgate/internal/telemetry"
	"github.com/toolgate/toolgate/policies"
	"github.com/toolgate/toolgate/sessions"
	"github.com/toolgate/toolgate/sessions/sessionstest"
	"github.com/toolgate/toolgate/tools"
)

// otlpReceiver is an OTLP/HTTP trace endpoint that decodes what it gets.
type otlpReceiver struct {
	mu    sync.Mutex
	spans []*tracepb.Span
}

func startOTLPReceiver(t testing.TB) (*otlpReceiver, string) {
	t.Helper()
	rcv := &otlpReceiver{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			http.Error(w, "want protobuf at /v1/traces", http.StatusBadRequest)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var req coltrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(body, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rcv.mu.Lock()
		for _, rs := range req.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				rcv.spans = append(rcv.spans, ss.Spans...)
			}
		}
		rcv.mu.Unlock()
		out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(srv.Close)
	return rcv, srv.URL + "/v1/traces"
}

func (r *otlpReceiver) all() []*tracepb.Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*tracepb.Span(nil), r.spans...)
}

func attrString(s *tracepb.Span, key string) (string, bool) {
	for _, kv := range s.Attributes {
		if kv.Key == key {
			if v, ok := kv.Value.Value.(*commonpb.AnyValue_StringValue); ok {
				return v.StringValue, true
			}
			b, _ := json.Marshal(kv.Value)
			return string(b), true
		}
	}
	return "", false
}

// tracedEnv is a gateway that exports spans to an in-process OTLP receiver.
type tracedEnv struct {
	url     string
	rcv     *otlpReceiver
	tp      *sdktrace.TracerProvider
	metrics *sdkmetric.ManualReader
	gw      *gateway.Gateway
}

const telemetryPolicy = `
rules:
  - id: no-rm
    when: call.name == "demo__run_shell" && call.args.command.contains("rm -rf")
    action: revoke
    message: Destructive shell commands end the session.
  - id: no-secrets
    match:
      labels: [credential]
    when: "true"
    action: deny
    message: Secrets are not for agents.
`

func startTraced(t testing.TB, store sessions.Store, rec *audit.Recorder, recordArgs bool) *tracedEnv {
	return startEnv(t, store, rec, recordArgs, true)
}

func startEnv(t testing.TB, store sessions.Store, rec *audit.Recorder, recordArgs, traced bool) *tracedEnv {
	t.Helper()
	return startEnvWith(t, store, rec, recordArgs, traced, nil)
}

// startEnvWith is startEnv with more upstream servers besides demo.
func startEnvWith(t testing.TB, store sessions.Store, rec *audit.Recorder, recordArgs, traced bool, more []tools.ServerConfig) *tracedEnv {
	t.Helper()
	rcv, endpoint := startOTLPReceiver(t)
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(endpoint))
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(telemetry.NewBatcher(exp, telemetry.BatcherOptions{})))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))

	cfg := tools.Config{Servers: []tools.ServerConfig{{Name: "demo", Transport: "builtin", Builtin: "demo",
		ToolLabels: map[string][]string{"read_secret": {"credential"}}}}}
	cfg.Servers = append(cfg.Servers, more...)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	m, err := tools.New(cfg, tools.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	auth, err := gateway.NewAuthenticator(gateway.IdentityConfig{APIKeys: []gateway.APIKeyConfig{
		{Agent: "agent-1", Profile: "default", KeyEnv: "KEY1"},
	}}, func(name string) (string, bool) { v, ok := sessionKeys[name]; return v, ok }, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	set, err := policies.Compile([]policies.SourceFile{{Name: "test.yaml", Data: []byte(telemetryPolicy)}}, policies.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tel := gateway.Telemetry{Audit: rec, RecordArguments: recordArgs}
	if traced {
		tel.Tracer, tel.Meter = tp, mp
	}
	g, err := gateway.New(gateway.Config{}, m, gateway.Options{Store: store, Auth: auth, Profiles: defaultProfiles(),
		Policy:    set,
		Telemetry: tel})
	if err != nil {
		t.Fatal(err)
	}
	g.Sync()
	ts := httptest.NewServer(g.Handler())
	t.Cleanup(ts.Close)
	return &tracedEnv{url: ts.URL, rcv: rcv, tp: tp, metrics: reader, gw: g}
}

// flush exports every ended span to the receiver.
func (env *tracedEnv) flush(t *testing.T) []*tracepb.Span {
	t.Helper()
	if err := env.tp.ForceFlush(context.Background()); err != nil {
		t.Fatalf("ForceFlush: %v", err)
	}
	return env.rcv.all()
}

func tracedClient(t testing.TB, base string, header map[string]string) *client.Client {
	t.Helper()
	h := map[string]string{"Authorization": "Bearer " + sessionKeys["KEY1"]}
	for k, v := range header {
		h[k] = v
	}
	tr, err := transport.NewStreamableHTTP(base+"/mcp", transport.WithHTTPHeaders(h))
	if err != nil {
		t.Fatal(err)
	}
	c := client.NewClient(tr)
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Initialize(ctx, mcp.InitializeRequest{}); err != nil {
		t.Fatal(err)
	}
	return c
}

// children returns the spans whose parent is p, by name.
func children(spans []*tracepb.Span, p *tracepb.Span) map[string]*tracepb.Span {
	out := map[string]*tracepb.Span{}
	for _, s := range spans {
		if string(s.ParentSpanId) == string(p.SpanId) && string(s.TraceId) == string(p.TraceId) {
			out[s.Name] = s
		}
	}
	return out
}

func spanNamed(t *testing.T, spans []*tracepb.Span, name string) *tracepb.Span {
	t.Helper()
	var found *tracepb.Span
	for _, s := range spans {
		if s.Name == name {
			if found != nil {
				t.Fatalf("two spans named %q", name)
			}
			found = s
		}
	}
	if found == nil {
		names := []string{}
		for _, s := range spans {
			names = append(names, s.Name)
		}
		t.Fatalf("no span named %q among %v", name, names)
	}
	return found
}

func TestSpanTreeOfCalls(t *testing.T) {
	env := startTraced(t, sessions.NewMemory(sessions.Options{}), nil, false)
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	const parentID = "00f067aa0ba902b7"
	c := tracedClient(t, env.url, map[string]string{"traceparent": "00-" + traceID + "-" + parentID + "-01"})

	calls := []struct {
		tool, args string
		decision   string
		upstream   bool
		wantError  bool
	}{
		{"demo__list_files", `{"path":"SECRET-ARG-1"}`, "allow", true, false},
		{"demo__read_secret", `{"name":"SECRET-ARG-2"}`, "deny", false, true},
		{"demo__run_shell", `{"command":"rm -rf SECRET-ARG-3"}`, "revoke", false, true},
	}
	for _, c2 := range calls {
		res, err := callTool(c, c2.tool, c2.args)
		if err != nil {
			t.Fatalf("CallTool(%s): %v", c2.tool, err)
		}
		if res.IsError != c2.wantError && c2.decision != "allow" {
			t.Fatalf("CallTool(%s).IsError = %v; want %v", c2.tool, res.IsError, c2.wantError)
		}
	}
	spans := env.flush(t)
	for _, s := range spans {
		for _, kv := range s.Attributes {
			if strings.Contains(kv.String(), "SECRET-ARG") {
				t.Errorf("span %q attribute %s holds an argument value: %v", s.Name, kv.Key, kv.Value)
			}
		}
	}
	for _, tc := range calls {
		t.Run(tc.decision, func(t *testing.T) {
			root := spanNamed(t, spans, "tools/call "+tc.tool)
			if got := hex.EncodeToString(root.TraceId); got != traceID {
				t.Errorf("trace id = %s; want %s (from the traceparent header)", got, traceID)
			}
			if got := hex.EncodeToString(root.ParentSpanId); got != parentID {
				t.Errorf("parent span id = %s; want %s", got, parentID)
			}
			if root.Kind != tracepb.Span_SPAN_KIND_SERVER {
				t.Errorf("kind = %v; want server", root.Kind)
			}
			want := map[string]string{"mcp.method.name": "tools/call", "gen_ai.tool.name": tc.tool,
				"gen_ai.operation.name": "execute_tool", "toolgate.agent": "agent-1",
				"toolgate.profile": "default", "toolgate.decision": tc.decision}
			for k, v := range want {
				if got, _ := attrString(root, k); got != v {
					t.Errorf("attribute %s = %q; want %q", k, got, v)
				}
			}
			if got, ok := attrString(root, "toolgate.session.id"); !ok || got == "" {
				t.Error("no toolgate.session.id attribute")
			}
			if _, ok := attrString(root, "gen_ai.tool.call.arguments"); ok {
				t.Error("arguments recorded though record_arguments is off")
			}
			kids := children(spans, root)
			for _, name := range []string{"toolgate.authenticate", "toolgate.admit"} {
				if kids[name] == nil {
					t.Errorf("no child span %q of %q", name, root.Name)
				}
			}
			if got := kids["toolgate.upstream.call"] != nil; got != tc.upstream {
				t.Errorf("upstream span present = %v; want %v", got, tc.upstream)
			}
			if admit := kids["toolgate.admit"]; admit != nil {
				pol := children(spans, admit)["toolgate.policy.evaluate"]
				if pol == nil {
					t.Fatal("no policy span under the admit span")
				}
				if got, _ := attrString(pol, "toolgate.decision"); got != tc.decision {
					t.Errorf("policy span decision = %q; want %q", got, tc.decision)
				}
				if tc.decision != "allow" {
					if rules, _ := attrString(pol, "toolgate.rules"); rules == "" {
						t.Error("policy span has no toolgate.rules")
					}
				}
			}
			if tc.decision != "allow" && root.Status.GetCode() != tracepb.Status_STATUS_CODE_ERROR {
				t.Errorf("status = %v; want error for a refused call", root.Status)
			}
		})
	}
}

func TestTraceContextFromMeta(t *testing.T) {
	env := startTraced(t, sessions.NewMemory(sessions.Options{}), nil, true)
	c := tracedClient(t, env.url, nil)
	const traceID = "0af7651916cd43dd8448eb211c80319c"
	req := mcp.CallToolRequest{}
	req.Params.Name = "demo__read_secret"
	req.Params.Arguments = json.RawMessage(`{"name":"db/prod/password"}`)
	req.Params.Meta = &mcp.Meta{AdditionalFields: map[string]any{"traceparent": "00-" + traceID + "-b7ad6b7169203331-01"}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.CallTool(ctx, req); err != nil {
		t.Fatal(err)
	}
	root := spanNamed(t, env.flush(t), "tools/call demo__read_secret")
	if got := hex.EncodeToString(root.TraceId); got != traceID {
		t.Errorf("trace id = %s; want %s (from params._meta.traceparent)", got, traceID)
	}
	// Arguments are recorded on request, but a credential tool's values never.
	got, _ := attrString(root, "gen_ai.tool.call.arguments")
	if want := `{"name":"[redacted]"}`; got != want {
		t.Errorf("gen_ai.tool.call.arguments = %s; want %s", got, want)
	}
}

func TestCallMetrics(t *testing.T) {
	env := startTraced(t, sessions.NewMemory(sessions.Options{}), nil, false)
	c := tracedClient(t, env.url, nil)
	for _, call := range [][2]string{{"demo__list_files", `{}`}, {"demo__list_files", `{}`}, {"demo__read_secret", `{"name":"x"}`}} {
		if _, err := callTool(c, call[0], call[1]); err != nil {
			t.Fatal(err)
		}
	}
	var rm metricdata.ResourceMetrics
	if err := env.metrics.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	counts := map[string]int64{}
	seen := map[string]bool{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			seen[m.Name] = true
			if sum, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == "toolgate.calls" {
				for _, dp := range sum.DataPoints {
					d, _ := dp.Attributes.Value("toolgate.decision")
					tool, _ := dp.Attributes.Value("gen_ai.tool.name")
					counts[d.AsString()+" "+tool.AsString()] += dp.Value
				}
			}
		}
	}
	want := map[string]int64{"allow demo__list_files": 2, "deny demo__read_secret": 1}
	for k, v := range want {
		if counts[k] != v {
			t.Errorf("toolgate.calls{%s} = %d; want %d (all: %v)", k, counts[k], v, counts)
		}
	}
	for _, name := range []string{"toolgate.decision.duration", "toolgate.upstream.duration", "toolgate.sessions.active", "toolgate.upstream.up", "toolgate.store.errors"} {
		if !seen[name] {
			t.Errorf("metric %s not reported", name)
		}
	}
}

// TestAuditSurvivesRestart kills a gateway (its recorder is never closed,
// so nothing queued is flushed) and starts another on the same Redis: the
// refusals and the revoke of the first are in the stream, before and after.
func TestAuditSurvivesRestart(t *testing.T) {
	rs := sessionstest.StartRedis(t)
	rdb := rs.Client()
	prefix := sessionstest.Prefix()
	key := prefix + ":audit"
	store := sessions.NewRedis(rdb, sessions.RedisOptions{Prefix: prefix})

	rec1 := audit.NewRecorder(audit.NewRedisStream(rdb, key, 1000), audit.Options{})
	env1 := startTraced(t, store, rec1, false)
	c1 := tracedClient(t, env1.url, nil)
	if _, err := callTool(c1, "demo__read_secret", `{"name":"x"}`); err != nil {
		t.Fatal(err)
	}
	if _, err := callTool(c1, "demo__run_shell", `{"command":"rm -rf /"}`); err != nil {
		t.Fatal(err)
	}
	// Killed: rec1 is dropped without Close.

	rec2 := audit.NewRecorder(audit.NewRedisStream(rdb, key, 1000), audit.Options{})
	env2 := startTraced(t, store, rec2, false)
	_ = env2
	if err := rec2.Record(context.Background(), audit.Event{Kind: audit.KindPolicyReload, PolicyVersion: "v2"}, true); err != nil {
		t.Fatal(err)
	}
	var got []string
	err := audit.TailRedis(context.Background(), rdb, key, "0", false, func(e audit.Entry) error {
		got = append(got, string(e.Event.Kind)+":"+e.Event.Decision+":"+e.Event.Tool)
		return nil
	})
	if err != nil {
		t.Fatalf("TailRedis: %v", err)
	}
	want := []string{"decision:deny:demo__read_secret", "decision:revoke:demo__run_shell", "revoke:revoke:demo__run_shell", "policy_reload::"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("audit stream = %v; want %v", got, want)
	}
}

// BenchmarkCallTracing measures a whole allowed call through the gateway
// with tracing and metrics off, and on (batch export to an in-process OTLP
// receiver), reporting p50 and p99 per call.
//
//	go test ./gateway/ -run '^$' -bench CallTracing -benchtime 3000x
func BenchmarkCallTracing(b *testing.B) {
	for _, traced := range []bool{false, true} {
		name := "off"
		if traced {
			name = "on"
		}
		b.Run(name, func(b *testing.B) {
			env := startEnv(b, sessions.NewMemory(sessions.Options{}), nil, false, traced)
			c := tracedClient(b, env.url, nil)
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				res, err := callTool(c, "demo__list_files", `{}`)
				if err != nil || res.IsError {
					b.Fatalf("call: %v %v", res, err)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}

// TestRequestIDAttribute checks jsonrpc.request.id against what fmt makes
// of the decoded id, for ids of every shape.
func TestRequestIDAttribute(t *testing.T) {
	env := startTraced(t, sessions.NewMemory(sessions.Options{}), nil, false)
	tr, err := transport.NewStreamableHTTP(env.url+"/mcp", transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer " + sessionKeys["KEY1"]}))
	if err != nil {
		t.Fatal(err)
	}
	c := client.NewClient(tr)
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	init, err := c.Initialize(ctx, mcp.InitializeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// The edge refuses ids that are neither strings nor integers.
	ids := []string{`1`, `-3`, `123456789`, `9007199254740993`, `"abc"`, `"x y"`, `""`}
	for _, id := range ids {
		body := `{"jsonrpc":"2.0","id":` + id + `,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"` +
			init.ProtocolVersion + `","io.modelcontextprotocol/clientCapabilities":{}}}}`
		req, _ := http.NewRequest(http.MethodPost, env.url+"/mcp", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+sessionKeys["KEY1"])
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Mcp-Session-Id", tr.GetSessionId())
		req.Header.Set("Mcp-Protocol-Version", init.ProtocolVersion)
		req.Header.Set("Mcp-Method", "tools/list")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("tools/list with id %s = %d %s; want 200", id, resp.StatusCode, b)
		}
	}
	got := map[string]bool{}
	for _, s := range env.flush(t) {
		if v, ok := attrString(s, "jsonrpc.request.id"); ok {
			got[v] = true
		}
	}
	for _, id := range ids {
		var v any
		if err := json.Unmarshal([]byte(id), &v); err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprint(v); !got[want] {
			t.Errorf("no span with jsonrpc.request.id %q (id %s); have %v", want, id, got)
		}
	}
}

// TestSpanAttributesNotRepeated checks that a call's spans do not repeat
// what an ancestor span says already: each copy is exported with every
// call. The MCP method of the upstream call, and the policy span's
// decision (what the policy decided, before a retry or approval), are
// the span's own.
func TestSpanAttributesNotRepeated(t *testing.T) {
	env := startTraced(t, sessions.NewMemory(sessions.Options{}), nil, true)
	c := tracedClient(t, env.url, nil)
	for _, call := range [][2]string{{"demo__list_files", `{}`}, {"demo__read_secret", `{"name":"x"}`}, {"demo__run_shell", `{"command":"rm -rf /"}`}} {
		if _, err := callTool(c, call[0], call[1]); err != nil {
			t.Fatal(err)
		}
	}
	own := map[string]bool{"mcp.method.name": true, "toolgate.decision": true, "toolgate.rules": true}
	spans := env.flush(t)
	byID := map[string]*tracepb.Span{}
	for _, s := range spans {
		byID[string(s.SpanId)] = s
	}
	for _, s := range spans {
		for p := byID[string(s.ParentSpanId)]; p != nil; p = byID[string(p.ParentSpanId)] {
			for _, kv := range s.Attributes {
				if own[kv.Key] {
					continue
				}
				if v, ok := attrString(p, kv.Key); ok {
					if mine, _ := attrString(s, kv.Key); mine == v {
						t.Errorf("span %q repeats %s=%s of its ancestor %q", s.Name, kv.Key, v, p.Name)
					}
				}
			}
		}
	}
	// What the call's spans do say.
	root := spanNamed(t, spans, "tools/call demo__list_files")
	up := children(spans, root)["toolgate.upstream.call"]
	if up == nil {
		t.Fatal("no upstream span")
	}
	for k, v := range map[string]string{"toolgate.upstream.server": "demo", "gen_ai.tool.name": "list_files", "mcp.method.name": "tools/call"} {
		if got, _ := attrString(up, k); got != v {
			t.Errorf("upstream span %s = %q; want %q", k, got, v)
		}
	}
	for _, k := range []string{"toolgate.call.seq", "toolgate.risk", "toolgate.session.id", "gen_ai.tool.call.arguments", "jsonrpc.request.id"} {
		if got, ok := attrString(root, k); !ok || got == "" {
			t.Errorf("request span has no %s", k)
		}
	}
	shell := spanNamed(t, spans, "tools/call demo__run_shell")
	if got, _ := attrString(shell, "error.type"); got != "toolgate.revoke" {
		t.Errorf("revoked call's error.type = %q; want toolgate.revoke", got)
	}
	if got, _ := attrString(shell, "toolgate.rules"); !strings.Contains(got, "no-rm") {
		t.Errorf("revoked call's toolgate.rules = %q; want no-rm", got)
	}
}

// TestUpstreamGetsTraceContext checks that a forwarded call's _meta carries
// the upstream span's trace context, beside toolgate's own keys.
func TestUpstreamGetsTraceContext(t *testing.T) {
	metas := make(chan map[string]any, 1)
	up := server.NewMCPServer("up", "1")
	up.AddTool(mcp.NewTool("meta"), func(_ context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		m := map[string]any{}
		if req.Params.Meta != nil {
			m = req.Params.Meta.AdditionalFields
		}
		metas <- m
		return mcp.NewToolResultText("ok"), nil
	})
	ts := httptest.NewServer(server.NewStreamableHTTPServer(up))
	t.Cleanup(ts.Close)
	env := startEnvWith(t, sessions.NewMemory(sessions.Options{}), nil, false, true,
		[]tools.ServerConfig{{Name: "up", Transport: "streamable-http", URL: ts.URL + "/mcp", Timeout: 10 * time.Second}})
	c := tracedClient(t, env.url, nil)
	if res, err := callTool(c, "up__meta", `{}`); err != nil || res.IsError {
		t.Fatalf("CallTool(up__meta) = %+v, %v", res, err)
	}
	meta := <-metas
	span := spanNamed(t, env.flush(t), "toolgate.upstream.call")
	want := "00-" + hex.EncodeToString(span.TraceId) + "-" + hex.EncodeToString(span.SpanId) + "-01"
	if got := meta["traceparent"]; got != want {
		t.Errorf("_meta.traceparent = %v; want %s, the upstream span's (all: %v)", got, want, meta)
	}
	if len(meta) < 2 {
		t.Errorf("_meta = %v; want toolgate's keys beside traceparent", meta)
	}
}

// TestSpansGoToTheirProvider runs calls through two gateways, each with its
// own tracer provider, in turn: every child span goes to the provider of
// its request span, whichever gateway made a span last.
func TestSpansGoToTheirProvider(t *testing.T) {
	envs := []*tracedEnv{
		startTraced(t, sessions.NewMemory(sessions.Options{}), nil, false),
		startTraced(t, sessions.NewMemory(sessions.Options{}), nil, false),
	}
	clients := []*client.Client{tracedClient(t, envs[0].url, nil), tracedClient(t, envs[1].url, nil)}
	for range 2 {
		for _, c := range clients {
			if res, err := callTool(c, "demo__list_files", `{}`); err != nil || res.IsError {
				t.Fatalf("CallTool(demo__list_files) = %+v, %v", res, err)
			}
		}
	}
	for i, env := range envs {
		spans := env.flush(t)
		count := map[string]int{}
		for _, s := range spans {
			count[s.Name]++
		}
		for _, name := range []string{"tools/call demo__list_files", "toolgate.authenticate", "toolgate.admit",
			"toolgate.policy.evaluate", "toolgate.upstream.call"} {
			if count[name] < 2 {
				t.Errorf("gateway %d exported %d spans %q; want 2 or more (all: %v)", i, count[name], name, count)
			}
		}
		if got, want := count["toolgate.policy.evaluate"], count["tools/call demo__list_files"]; got != want {
			t.Errorf("gateway %d exported %d policy spans for %d calls", i, got, want)
		}
	}
}
