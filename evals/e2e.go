package evals

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"sort"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/internal/config"
	"github.com/toolgate/toolgate/policies"
	"github.com/toolgate/toolgate/sessions"
	"github.com/toolgate/toolgate/tools"
	"github.com/toolgate/toolgate/tools/replay"
)

// callTimeout bounds one replayed call end to end.
const callTimeout = 30 * time.Second

// ReplayEndToEnd replays traces through a real gateway: every suite gets a
// replay MCP tool server over Streamable HTTP on a loopback port, the
// gateway connects to them as its upstreams (with the config's labels),
// and a real MCP client opens one session per trace and makes the recorded
// calls over HTTP. Decisions are read back from the session store. It
// gives the same decisions as Replay, more slowly; flags are not visible
// from outside, so TraceResult.Flags stays empty.
func ReplayEndToEnd(ctx context.Context, cfg *config.Config, traces []Trace, opts Options) (*Result, error) {
	opts = opts.withDefaults()
	e, err := newEnv(cfg, traces, opts)
	if err != nil {
		return nil, err
	}
	servers := map[string]*replay.Server{}
	toolsBySuite := map[string][]string{}
	for _, t := range e.catalog.list {
		toolsBySuite[t.Server] = append(toolsBySuite[t.Server], t.Upstream)
	}
	upCfg := tools.Config{Separator: cfg.Tools.Separator}
	suites := make([]string, 0, len(toolsBySuite))
	for s := range toolsBySuite {
		suites = append(suites, s)
	}
	sort.Strings(suites)
	for _, suite := range suites {
		rs := replay.New(suite, toolsBySuite[suite])
		ts := httptest.NewServer(server.NewStreamableHTTPServer(rs.MCPServer()))
		defer ts.Close()
		servers[suite] = rs
		sc := e.servers[suite]
		upCfg.Servers = append(upCfg.Servers, tools.ServerConfig{Name: suite, Transport: tools.TransportStreamableHTTP,
			URL: ts.URL + "/mcp", Timeout: callTimeout, Labels: sc.Labels, ToolLabels: sc.ToolLabels})
	}
	up, err := tools.New(upCfg, tools.Options{Logger: opts.Logger})
	if err != nil {
		return nil, fmt.Errorf("replay end to end: %w", err)
	}
	defer up.Close()
	if err := up.Start(ctx); err != nil {
		return nil, fmt.Errorf("replay end to end: connect to the replay servers: %w", err)
	}
	store := sessions.NewMemory(sessions.Options{Clock: e.clock, Logger: opts.Logger})
	gcfg := cfg.Gateway
	// No one approves in a replay: a held call is refused at once.
	gcfg.ApprovalTimeout = time.Nanosecond
	g, err := gateway.New(gcfg, up, gateway.Options{Store: store, Profiles: cfg.Profiles, Policy: e.policy,
		Logger: opts.Logger, Now: e.clock.Now})
	if err != nil {
		return nil, fmt.Errorf("replay end to end: build the gateway: %w", err)
	}
	g.Sync()
	gts := httptest.NewServer(g.Handler())
	defer gts.Close()
	defer g.Close(context.WithoutCancel(ctx))

	res := &Result{Mode: ModeEndToEnd, Traces: make([]TraceResult, 0, len(traces))}
	bar := newProgress(opts.Progress, len(traces))
	for i := range traces {
		t := &traces[i]
		calls := make([]replay.Call, len(t.Calls))
		for j, c := range t.Calls {
			calls[j] = c.Replay()
		}
		servers[t.Suite].Load(calls)
		tr, err := e.replayOverHTTP(ctx, g, store, gts.URL+"/mcp", t)
		if err != nil {
			return nil, fmt.Errorf("replay end to end: trace %q: %w", t.ID, err)
		}
		res.Traces = append(res.Traces, tr)
		bar.advance()
	}
	bar.done()
	return res, nil
}

func (e *env) replayOverHTTP(ctx context.Context, g *gateway.Gateway, store sessions.Store, url string, t *Trace) (TraceResult, error) {
	e.clock.Set(e.opts.Start)
	spec, err := e.spec(t)
	if err != nil {
		return TraceResult{}, err
	}
	sess, token, err := store.Create(ctx, spec)
	if err != nil {
		return TraceResult{}, fmt.Errorf("open session: %w", err)
	}
	c, err := client.NewStreamableHttpClient(url, transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer " + token}))
	if err != nil {
		return TraceResult{}, fmt.Errorf("MCP client: %w", err)
	}
	defer c.Close()
	if err := c.Start(ctx); err != nil {
		return TraceResult{}, fmt.Errorf("MCP client: start: %w", err)
	}
	init := mcp.InitializeRequest{}
	init.Params.ClientInfo = mcp.Implementation{Name: "toolgate-eval", Version: "1"}
	if _, err := c.Initialize(ctx, init); err != nil {
		return TraceResult{}, fmt.Errorf("MCP client: initialize: %w", err)
	}
	tr := newTraceResult(t)
	for i, call := range t.Calls {
		e.clock.Set(e.opts.Start.Add(time.Duration(i+1) * e.opts.Step))
		before := g.Metrics().Snapshot().Decisions[policies.ActionRequireApproval]
		req := mcp.CallToolRequest{}
		req.Params.Name = e.toolName(t, call)
		req.Params.Arguments = json.RawMessage(call.args())
		callCtx, cancel := context.WithTimeout(ctx, callTimeout)
		begin := time.Now()
		_, err := c.CallTool(callCtx, req)
		took := time.Since(begin)
		cancel()
		if err != nil {
			return TraceResult{}, fmt.Errorf("call %d (%s): %w", i, call.Tool, err)
		}
		snap, err := store.Snapshot(ctx, sess.ID)
		if snap == nil {
			return TraceResult{}, fmt.Errorf("call %d (%s): read the session: %w", i, call.Tool, err)
		}
		if len(snap.History) == 0 {
			return TraceResult{}, fmt.Errorf("call %d (%s): the gateway recorded no decision", i, call.Tool)
		}
		last := snap.History[len(snap.History)-1]
		action, rule := policies.Action(last.Decision), ""
		if len(last.Rules) > 0 {
			rule = last.Rules[0]
		}
		if g.Metrics().Snapshot().Decisions[policies.ActionRequireApproval] > before {
			// The gateway records a refused approval as a deny; the
			// decision was to hold it.
			action = policies.ActionRequireApproval
		}
		tr.add(action, rule, nil, snap.Risk, took)
		if action == policies.ActionRevoke || snap.State != sessions.StateActive {
			break
		}
	}
	return tr, nil
}
