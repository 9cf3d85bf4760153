package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/toolgate/toolgate/internal/audit"
	"github.com/toolgate/toolgate/internal/telemetry"
	"github.com/toolgate/toolgate/policies"
	"github.com/toolgate/toolgate/sessions"
	"github.com/toolgate/toolgate/tools"
)

// Telemetry is where the gateway reports: spans, metrics, audit events.
// The zero value reports nothing (the gateway's own log and /v1/metrics
// counters still work).
type Telemetry struct {
	// Tracer makes the spans. Nil: no spans, and no attribute is built.
	Tracer trace.TracerProvider
	// Meter makes the metrics. Nil: no OpenTelemetry metrics.
	Meter metric.MeterProvider
	// Audit records decisions and operator actions. Nil: none.
	Audit *audit.Recorder
	// RecordArguments and RecordResults put tool arguments and results on
	// spans; values of tools labelled credential are redacted.
	RecordArguments, RecordResults bool
}

// gatewayTelemetry is the gateway's side of Telemetry, built once in New.
type gatewayTelemetry struct {
	tracer  trace.Tracer // nil: tracing off
	prop    propagation.TextMapPropagator
	inst    *telemetry.Instruments
	audit   *audit.Recorder
	args    bool
	results bool
}

func newGatewayTelemetry(t Telemetry, g *Gateway) (*gatewayTelemetry, error) {
	gt := &gatewayTelemetry{prop: telemetry.Propagator(), audit: t.Audit, args: t.RecordArguments, results: t.RecordResults}
	if t.Tracer != nil {
		gt.tracer = t.Tracer.Tracer(telemetry.ScopeName)
	}
	if t.Meter != nil {
		inst, err := telemetry.NewInstruments(t.Meter)
		if err != nil {
			return nil, fmt.Errorf("gateway metrics: %w", err)
		}
		err = inst.Observe(telemetry.Observed{
			ActiveSessions: g.countActive,
			Upstreams: func() map[string]bool {
				m := map[string]bool{}
				for _, h := range g.up.Health() {
					m[h.Name] = h.State == tools.StateReady
				}
				return m
			},
			StoreErrors: g.metrics.storeErrors.Load,
		})
		if err != nil {
			return nil, fmt.Errorf("gateway metrics: %w", err)
		}
		gt.inst = inst
	}
	return gt, nil
}

// maxCountedSessions bounds the work of counting active sessions at each
// metrics export.
const maxCountedSessions = 100_000

// countActive counts active sessions for the sessions.active gauge.
func (g *Gateway) countActive(ctx context.Context) (int64, error) {
	var n int64
	cursor := ""
	for n < maxCountedSessions {
		page, err := g.store.List(ctx, sessions.ListOptions{State: sessions.StateActive, Cursor: cursor})
		if err != nil {
			return 0, fmt.Errorf("count active sessions: %w", err)
		}
		n += int64(len(page.Sessions))
		if page.Next == "" {
			break
		}
		cursor = page.Next
	}
	return n, nil
}

var noSpan = trace.SpanFromContext(context.Background())

// child starts a span under the one in ctx, with the same provider; when
// the parent does not record, nothing is started or allocated.
func child(ctx context.Context, name string, kind trace.SpanKind) (context.Context, trace.Span) {
	return childWith(ctx, name, kind)
}

// childWith is child with the span's attributes known at its start: given
// to Start, they are copied once into the span rather than appended to it.
func childWith(ctx context.Context, name string, kind trace.SpanKind, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	parent := trace.SpanFromContext(ctx)
	if !parent.IsRecording() {
		return ctx, noSpan
	}
	tracer := tracerOf(parent)
	if len(attrs) == 0 {
		return tracer.Start(ctx, name, trace.WithSpanKind(kind))
	}
	return tracer.Start(ctx, name, trace.WithSpanKind(kind), trace.WithAttributes(attrs...))
}

// cachedTracer is the tracer of the SDK provider whose spans were last
// parents: looking it up through the provider takes the provider's lock
// and hashes the scope, for every span. One gateway per process has one
// provider, so one entry is enough; another provider just replaces it.
var cachedTracer atomic.Pointer[providerTracer]

type providerTracer struct {
	tp     *sdktrace.TracerProvider
	tracer trace.Tracer
}

// tracerOf is toolgate's tracer of the provider that made span.
func tracerOf(span trace.Span) trace.Tracer {
	tp := span.TracerProvider()
	// Only the SDK's provider is cached: it is a pointer, so comparing it
	// is cheap and cannot panic, as comparing other providers could.
	sdk, ok := tp.(*sdktrace.TracerProvider)
	if !ok {
		return tp.Tracer(telemetry.ScopeName)
	}
	if c := cachedTracer.Load(); c != nil && c.tp == sdk {
		return c.tracer
	}
	t := sdk.Tracer(telemetry.ScopeName)
	cachedTracer.Store(&providerTracer{tp: sdk, tracer: t})
	return t
}

// traceHandler starts the span of one MCP request (a POST), under the
// trace context of the message's params._meta or, failing that, of the
// traceparent header. It runs after edgeHandler, which read the method.
func (g *Gateway) traceHandler(next http.Handler) http.Handler {
	if g.tel.tracer == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			next.ServeHTTP(w, r)
			return
		}
		ctx := g.tel.prop.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		if meta := metaCarrier(r); meta != nil {
			ctx = g.tel.prop.Extract(ctx, meta)
		}
		method := methodFrom(r.Context())
		attrs := []attribute.KeyValue{
			telemetry.MCPMethod.String(method),
			telemetry.NetworkTransport.String("tcp"),
			telemetry.NetworkProtocol.String("http"),
		}
		if v := r.Header.Get("Mcp-Protocol-Version"); v != "" {
			attrs = append(attrs, telemetry.MCPProtocolVersion.String(v))
		}
		if v := r.Header.Get("Mcp-Session-Id"); v != "" {
			attrs = append(attrs, telemetry.MCPSessionID.String(v))
		}
		ctx, span := g.tel.tracer.Start(ctx, method, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attrs...))
		defer span.End()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// metaCarrier reads the trace context of a posted message's params._meta
// (MCP semantic conventions: "traceparent", "tracestate"), or returns nil.
// edgeHandler read the body already.
func metaCarrier(r *http.Request) propagation.MapCarrier {
	body := bodyFrom(r.Context())
	if !bytes.Contains(body, []byte(`"traceparent"`)) {
		return nil
	}
	var msg struct {
		Params struct {
			Meta map[string]any `json:"_meta"`
		} `json:"params"`
	}
	if json.Unmarshal(body, &msg) != nil {
		return nil
	}
	c := propagation.MapCarrier{}
	for _, k := range []string{"traceparent", "tracestate"} {
		if v, ok := msg.Params.Meta[k].(string); ok {
			c[k] = v
		}
	}
	if c["traceparent"] == "" {
		return nil
	}
	return c
}

// registerTelemetryHooks names the request span after the JSON-RPC id once
// mcp-go has parsed the message.
func (g *Gateway) registerTelemetryHooks(h *server.Hooks) {
	if g.tel.tracer == nil {
		return
	}
	h.AddBeforeAny(func(ctx context.Context, id any, method mcp.MCPMethod, _ any) {
		span := trace.SpanFromContext(ctx)
		if !span.IsRecording() || id == nil {
			return
		}
		span.SetAttributes(telemetry.JSONRPCRequestID.String(requestID(id)))
	})
}

// requestID is a JSON-RPC id as fmt.Sprint writes it, without fmt for the
// two types an id decodes to.
func requestID(id any) string {
	switch v := id.(type) {
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64)
	}
	return fmt.Sprint(id)
}

// startAuth starts the authentication span.
func (g *Gateway) startAuth(r *http.Request) (*http.Request, trace.Span) {
	ctx, span := child(r.Context(), telemetry.SpanAuthenticate, trace.SpanKindInternal)
	if span == noSpan {
		return r, span
	}
	return r.WithContext(ctx), span
}

// endAuth ends the authentication span and labels the request span with
// the session (the request span only: the authentication span is its
// child, and a copy there would be exported with every request).
func endAuth(ctx context.Context, span trace.Span, as *agentSession, herr *httpError) {
	if !span.IsRecording() {
		return
	}
	if herr != nil {
		span.SetStatus(codes.Error, herr.msg)
		span.SetAttributes(telemetry.ErrorType.String(strconv.Itoa(herr.status)))
		trace.SpanFromContext(ctx).SetStatus(codes.Error, "authentication failed")
	} else {
		trace.SpanFromContext(ctx).SetAttributes(telemetry.SessionID.String(as.ID), telemetry.Agent.String(as.Agent),
			telemetry.Profile.String(as.Profile))
	}
	span.End()
}

// callTrace follows one tools/call through admission and the upstream.
type callTrace struct {
	g       *Gateway
	as      *agentSession
	tool    string
	args    json.RawMessage
	start   time.Time
	request trace.Span // the MCP request's span (noSpan when not traced)
	admit   trace.Span
}

// startCall names the request span after the tool and starts the admit
// span. The request span's attributes of the call wait for admitted, which
// sets them all at once: the span's attribute list then grows once.
// endAuth put the session on the request span already.
func (g *Gateway) startCall(ctx context.Context, as *agentSession, req mcp.CallToolRequest) (context.Context, *callTrace) {
	ct := &callTrace{g: g, as: as, tool: req.Params.Name, args: req.Params.RawArguments, start: time.Now(),
		request: trace.SpanFromContext(ctx), admit: noSpan}
	if !ct.request.IsRecording() {
		return ctx, ct
	}
	ct.request.SetName(string(mcp.MethodToolsCall) + " " + req.Params.Name)
	ctx, ct.admit = child(ctx, telemetry.SpanAdmit, trace.SpanKindInternal)
	return ctx, ct
}

// admitted reports the decision: spans, metrics and the audit event.
// Refusals are audited synchronously, before the agent is answered.
func (ct *callTrace) admitted(ctx context.Context, out Outcome, err error) {
	g := ct.g
	if err != nil {
		if ct.admit.IsRecording() {
			ct.admit.RecordError(err)
			ct.admit.SetStatus(codes.Error, err.Error())
			ct.admit.End()
			ct.request.SetAttributes(ct.callAttrs(0)...)
			ct.request.SetStatus(codes.Error, "the call could not be decided")
		}
		return
	}
	action := string(out.Decision.Action)
	var rules, flags []string
	if ct.admit.IsRecording() || g.tel.audit != nil {
		rules, flags = ruleIDs(out.Decision), flagKinds(out.Flags)
	}
	if ct.admit.IsRecording() {
		// The decision goes on the request span only: the admit span is its
		// child, and the policy span below it has the decision and rules.
		ct.admit.End()
		attrs := ct.decisionAttrs(out, rules, flags)
		if g.tel.args {
			attrs = append(attrs, telemetry.GenAIToolArgs.String(redactArgs(out.Tool, ct.args)))
		}
		if !out.Forward {
			attrs = append(attrs, telemetry.ErrorType.String("toolgate."+action))
			ct.request.SetStatus(codes.Error, "refused: "+action)
		}
		ct.request.SetAttributes(attrs...)
	}
	if g.tel.inst != nil {
		g.tel.inst.Call(ctx, action, ct.tool, time.Since(ct.start).Seconds())
		if out.Decision.Action == policies.ActionRevoke {
			g.tel.inst.Revocation(ctx, "policy", 1)
		}
	}
	if g.tel.audit == nil {
		return
	}
	e := audit.Event{Kind: audit.KindDecision, Session: ct.as.ID, Agent: ct.as.Agent, Profile: ct.as.Profile,
		Tool: ct.tool, Seq: out.Seq, Decision: action, Rules: rules, Flags: flags,
		Forwarded: out.Forward, TraceID: traceID(ct.request)}
	if out.Session != nil {
		e.Risk = out.Session.Risk
	}
	if !out.Forward {
		e.Reason = out.Message
	}
	// Allowed calls are queued (batched, asynchronous): they must not wait
	// for the stream. A refusal or revoke is stored before the answer.
	sync := !out.Forward
	if err := g.tel.audit.Record(context.WithoutCancel(ctx), e, sync); err != nil {
		g.auditFailed(ctx, err)
	}
	if out.Decision.Action == policies.ActionRevoke {
		e.Kind, e.Actor = audit.KindRevoke, "policy"
		e.Reason = "policy"
		if out.Decision.Rule != "" {
			e.Reason = "policy rule " + out.Decision.Rule
		}
		if err := g.tel.audit.Record(context.WithoutCancel(ctx), e, true); err != nil {
			g.auditFailed(ctx, err)
		}
	}
}

// startUpstream starts the upstream span and puts its trace context in
// the forwarded call's _meta (MCP semantic conventions).
func (ct *callTrace) startUpstream(ctx context.Context, out Outcome, opts *tools.CallOptions) (context.Context, trace.Span) {
	if !ct.request.IsRecording() {
		return ctx, noSpan
	}
	// The call's number is on the request span, the upstream span's parent.
	ctx, span := childWith(ctx, telemetry.SpanUpstream, trace.SpanKindClient, telemetry.Server.String(out.Tool.Server),
		telemetry.GenAIToolName.String(out.Tool.Upstream), telemetry.MCPMethod.String(string(mcp.MethodToolsCall)))
	if !span.IsRecording() {
		return ctx, span
	}
	if opts.Meta == nil {
		opts.Meta = map[string]any{}
	}
	ct.g.tel.prop.Inject(ctx, anyMapCarrier(opts.Meta))
	return ctx, span
}

// anyMapCarrier lets a propagator write to a _meta map directly.
type anyMapCarrier map[string]any

func (c anyMapCarrier) Get(key string) string {
	v, _ := c[key].(string)
	return v
}

func (c anyMapCarrier) Set(key, value string) { c[key] = value }

func (c anyMapCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// endUpstream ends the upstream span and records its latency.
func (ct *callTrace) endUpstream(ctx context.Context, span trace.Span, out Outcome, began time.Time, res *mcp.CallToolResult, err error) {
	errType := ""
	var ce *tools.CallError
	switch {
	case errors.As(err, &ce):
		errType = ce.Kind
	case err != nil:
		errType = "error"
	case res != nil && res.IsError:
		errType = "tool_error"
	}
	if ct.g.tel.inst != nil {
		ct.g.tel.inst.Upstream(ctx, out.Tool.Server, errType, time.Since(began).Seconds())
	}
	if !span.IsRecording() {
		return
	}
	if errType != "" {
		span.SetAttributes(telemetry.ErrorType.String(errType))
		span.SetStatus(codes.Error, errType)
		ct.request.SetAttributes(telemetry.ErrorType.String(errType))
		ct.request.SetStatus(codes.Error, errType)
	}
	if err == nil && ct.g.tel.results && res != nil {
		text := ResultText(res)
		if slices.Contains(out.Tool.Labels, telemetry.Credential) {
			text = telemetry.Redacted
		}
		ct.request.SetAttributes(telemetry.GenAIToolResult.String(text))
	}
	span.End()
}

// callAttrs are the request span's attributes of every tools/call, in a
// slice with room for extra attributes.
func (ct *callTrace) callAttrs(extra int) []attribute.KeyValue {
	attrs := make([]attribute.KeyValue, 0, 2+extra)
	return append(attrs, telemetry.GenAIToolName.String(ct.tool), telemetry.GenAIOperation.String("execute_tool"))
}

// decisionAttrs are the request span's attributes of an admitted call,
// with room for the arguments and an error type.
func (ct *callTrace) decisionAttrs(out Outcome, rules, flags []string) []attribute.KeyValue {
	attrs := ct.callAttrs(8)
	attrs = append(attrs, telemetry.Decision.String(string(out.Decision.Action)), telemetry.CallSeq.Int64(out.Seq))
	if len(rules) > 0 {
		attrs = append(attrs, telemetry.Rules.StringSlice(rules))
	}
	if len(flags) > 0 {
		attrs = append(attrs, telemetry.Flags.StringSlice(flags))
	}
	if out.Session != nil {
		attrs = append(attrs, telemetry.Risk.Float64(out.Session.Risk))
	}
	if len(out.Tool.Labels) > 0 {
		attrs = append(attrs, telemetry.Labels.StringSlice(out.Tool.Labels))
	}
	return attrs
}

// policySpan starts the policy evaluation span under ctx's span.
func policySpan(ctx context.Context) trace.Span {
	_, span := child(ctx, telemetry.SpanPolicy, trace.SpanKindInternal)
	return span
}

// endPolicySpan ends the policy span with what was decided and by which
// rules. The detectors' flags and risk it was decided with are on the
// request span, as the call's: they are not repeated here.
func endPolicySpan(span trace.Span, dec policies.Decision, _ []policies.Flag, _ float64) {
	if !span.IsRecording() {
		return
	}
	if rules := ruleIDs(dec); len(rules) > 0 {
		span.SetAttributes(telemetry.Decision.String(string(dec.Action)), telemetry.Rules.StringSlice(rules))
	} else {
		span.SetAttributes(telemetry.Decision.String(string(dec.Action)))
	}
	span.End()
}

// ruleIDs are the rules that decided and matched, deciding rule first.
func ruleIDs(d policies.Decision) []string {
	var out []string
	if d.Rule != "" {
		out = append(out, d.Rule)
	}
	for _, m := range d.Matched {
		if m.ID != d.Rule {
			out = append(out, m.ID)
		}
	}
	return out
}

func flagKinds(flags []policies.Flag) []string {
	if len(flags) == 0 {
		return nil
	}
	out := make([]string, len(flags))
	for i, f := range flags {
		out[i] = f.Kind
	}
	return out
}

func traceID(span trace.Span) string {
	if sc := span.SpanContext(); sc.HasTraceID() {
		return sc.TraceID().String()
	}
	return ""
}

// redactArgs is the arguments as recorded on a span: as sent, except that
// every value of a tool labelled credential is replaced.
func redactArgs(tool tools.Tool, args json.RawMessage) string {
	if !slices.Contains(tool.Labels, telemetry.Credential) {
		return string(args)
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(args, &m) != nil {
		return telemetry.Redacted
	}
	red := make(map[string]string, len(m))
	for k := range m {
		red[k] = telemetry.Redacted
	}
	b, _ := json.Marshal(red)
	return string(b)
}

// Audit records an operator's action (synchronously: before the admin API
// answers) and counts revocations.
func (g *Gateway) audit(ctx context.Context, e audit.Event) {
	if e.Kind == audit.KindRevoke && g.tel.inst != nil {
		n := int64(1)
		if e.Count > 0 {
			n = int64(e.Count)
		}
		g.tel.inst.Revocation(ctx, e.Actor, n)
	}
	if g.tel.audit == nil {
		return
	}
	e.TraceID = traceID(trace.SpanFromContext(ctx))
	if err := g.tel.audit.Record(context.WithoutCancel(ctx), e, true); err != nil {
		g.auditFailed(ctx, err)
	}
}

func (g *Gateway) auditFailed(ctx context.Context, err error) {
	if g.tel.inst != nil {
		g.tel.inst.AuditError(ctx)
	}
	g.log.Error("audit event not stored", "err", err)
}

// PolicyReloaded reports a policy reload: a metric and an audit event. Pass
// it as policies.EngineOptions.OnReload.
func (g *Gateway) PolicyReloaded(ev policies.ReloadEvent) {
	ctx := context.Background()
	result := "unchanged"
	e := audit.Event{Kind: audit.KindPolicyReload, PolicyVersion: ev.Version}
	switch {
	case ev.Err != nil:
		result, e.Error = "error", ev.Err.Error()
	case ev.Changed:
		result = "changed"
	}
	if g.tel.inst != nil {
		g.tel.inst.PolicyReload(ctx, result)
	}
	if ev.Err == nil && !ev.Changed {
		return // polling finds nothing most of the time: not an event
	}
	g.audit(ctx, e)
}
