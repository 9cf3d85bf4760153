package evals

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/internal/config"
	"github.com/toolgate/toolgate/policies"
	"github.com/toolgate/toolgate/sessions"
	"github.com/toolgate/toolgate/tools"
	"github.com/toolgate/toolgate/tools/replay"
)

// Modes of a replay.
const (
	// ModeDirect calls the gateway's Decider in process for every call.
	ModeDirect = "direct"
	// ModeEndToEnd drives a real gateway over HTTP with a real MCP client,
	// in front of replay tool servers.
	ModeEndToEnd = "end-to-end"
)

// DefaultStart is the time every replayed session starts at, a Monday
// morning, so that time-based rules see the same time in every run.
var DefaultStart = time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC)

// DefaultStep is the time between two replayed calls.
const DefaultStep = 5 * time.Second

// Options tune a replay. Nil and zero fields take the documented defaults.
type Options struct {
	// Logger receives progress logs. Nil: discard.
	Logger *slog.Logger
	// Progress, when set, gets a progress bar redrawn as traces finish.
	Progress io.Writer
	// Start is when each replayed session starts. Zero: DefaultStart.
	Start time.Time
	// Step is the time between calls of a session. Zero: DefaultStep.
	Step time.Duration
	// Policy decides calls. Nil: the engine loaded from the config's
	// policies.paths (allow every call in scope when there are none).
	Policy gateway.Policy
	// Shadow names rules of the config's policies to run in shadow mode
	// for this replay: they are evaluated and reported but decide
	// nothing. It measures the pack without them (for example without its
	// approval rules) from the same files. Ignored when Policy is set; an
	// id that names no rule is an error.
	Shadow []string
}

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Start.IsZero() {
		o.Start = DefaultStart
	}
	if o.Step <= 0 {
		o.Step = DefaultStep
	}
	return o
}

// Result is a replay of a set of traces: one record per trace, in input
// order.
type Result struct {
	Mode   string        `json:"mode"`
	Traces []TraceResult `json:"traces"`
}

// TraceResult is what happened to one trace.
type TraceResult struct {
	ID       string `json:"id"`
	Suite    string `json:"suite"`
	Agent    string `json:"agent"`
	Label    string `json:"label"`
	UserTask string `json:"user_task,omitempty"`
	// HarmfulCallIndex is copied from the trace.
	HarmfulCallIndex *int `json:"harmful_call_index"`
	// Decisions has one action per replayed call, in order; it ends at a
	// revoke, so it can be shorter than the trace.
	Decisions []policies.Action `json:"decisions"`
	// Rules has the deciding rule of each call ("" when no rule decided).
	Rules []string `json:"rules"`
	// Flags has the detector flags raised at each call.
	Flags [][]string `json:"flags"`
	// Risk has the session's risk after each call.
	Risk []float64 `json:"risk"`
	// Latency has the time each decision took (direct mode: Admit; end
	// to end: the client's round trip).
	Latency []time.Duration `json:"-"`
}

// Replay runs traces one by one, each as a fresh session, through the
// decision path a live gateway built from cfg uses: session snapshot,
// scope, detectors, policies, atomic commit; the recorded result of every
// call that goes through is fed back as its tool result. A trace stops at
// its first revoke. Calls held for approval are refused (no approver).
func Replay(ctx context.Context, cfg *config.Config, traces []Trace, opts Options) (*Result, error) {
	opts = opts.withDefaults()
	env, err := newEnv(cfg, traces, opts)
	if err != nil {
		return nil, err
	}
	store := sessions.NewMemory(sessions.Options{Clock: env.clock, Logger: opts.Logger})
	g, err := gateway.New(cfg.Gateway, env.catalog, gateway.Options{Store: store, Profiles: cfg.Profiles,
		Policy: env.policy, Logger: opts.Logger, Now: env.clock.Now})
	if err != nil {
		return nil, fmt.Errorf("replay: build the decision path: %w", err)
	}
	// A copy of the gateway's own Decider, without an approver: a call
	// that needs approval is refused at once instead of waiting.
	d := *g.Decider()
	d.Approvals = nil

	res := &Result{Mode: ModeDirect, Traces: make([]TraceResult, 0, len(traces))}
	bar := newProgress(opts.Progress, len(traces))
	for i := range traces {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("replay: %w", err)
		}
		tr, err := env.replayDirect(ctx, &d, store, &traces[i])
		if err != nil {
			return nil, fmt.Errorf("replay: trace %q: %w", traces[i].ID, err)
		}
		res.Traces = append(res.Traces, tr)
		bar.advance()
	}
	bar.done()
	return res, nil
}

// env is what both modes share: the catalog of the traces' tools with the
// config's labels, the policy, the profiles and a clock the replay sets.
type env struct {
	cfg     *config.Config
	opts    Options
	policy  gateway.Policy
	catalog *staticCatalog
	servers map[string]tools.ServerConfig // by suite
	clock   *stepClock
}

func newEnv(cfg *config.Config, traces []Trace, opts Options) (*env, error) {
	e := &env{cfg: cfg, opts: opts, policy: opts.Policy, servers: map[string]tools.ServerConfig{},
		clock: &stepClock{t: opts.Start}}
	if e.policy == nil && len(opts.Shadow) > 0 {
		set, err := loadWithShadow(cfg.Policies.Paths, opts.Shadow, cfg.Policies.Options())
		if err != nil {
			return nil, fmt.Errorf("load policies: %w", err)
		}
		e.policy = set
	}
	if e.policy == nil && len(cfg.Policies.Paths) > 0 {
		engine, err := policies.NewEngine(cfg.Policies.Paths, policies.EngineOptions{
			Options: cfg.Policies.Options(), Logger: opts.Logger})
		if err != nil {
			return nil, fmt.Errorf("load policies: %w", err)
		}
		e.policy = engine
	}
	for _, s := range cfg.Tools.Servers {
		e.servers[s.Name] = s
	}
	sep := cfg.Tools.Separator
	if sep == "" {
		sep = tools.DefaultSeparator
	}
	e.catalog = &staticCatalog{byName: map[string]tools.Tool{}}
	var missing []string
	for _, t := range traces {
		srv, ok := e.servers[t.Suite]
		if !ok {
			missing = append(missing, t.Suite)
			continue
		}
		if _, err := e.profileOf(&t); err != nil {
			return nil, err
		}
		for _, c := range t.Calls {
			name := t.Suite + sep + c.Tool
			if _, ok := e.catalog.byName[name]; ok {
				continue
			}
			raw, _ := json.Marshal(map[string]any{"name": c.Tool, "inputSchema": map[string]any{"type": "object"}})
			tool := tools.Tool{Name: name, Server: t.Suite, Upstream: c.Tool, Raw: raw, Labels: tools.LabelsFor(srv, c.Tool)}
			e.catalog.byName[name] = tool
			e.catalog.list = append(e.catalog.list, tool)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		missing = compact(missing)
		return nil, fmt.Errorf("the traces' suites %s have no tools server of that name in the config: add one per suite under tools.servers, with its labels", strings.Join(missing, ", "))
	}
	sort.Slice(e.catalog.list, func(i, j int) bool { return e.catalog.list[i].Name < e.catalog.list[j].Name })
	return e, nil
}

func compact(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// profileOf is the profile a trace's session gets: the trace's own, else
// the profile named like its suite, else the default profile.
func (e *env) profileOf(t *Trace) (string, error) {
	suite := t.Suite
	if t.Profile != "" {
		if _, ok := e.cfg.Profiles[t.Profile]; !ok {
			return "", fmt.Errorf("trace %q: profile %q is not in the config", t.ID, t.Profile)
		}
		return t.Profile, nil
	}
	if _, ok := e.cfg.Profiles[suite]; ok {
		return suite, nil
	}
	if _, ok := e.cfg.Profiles[gateway.DefaultProfile]; ok {
		return gateway.DefaultProfile, nil
	}
	return "", fmt.Errorf("suite %q has no profile: add a profile named %q or %q", suite, suite, gateway.DefaultProfile)
}

// spec is the session a trace opens: the profile's, as the gateway gives
// it to the agent (the same code), at the time of the replay.
func (e *env) spec(t *Trace) (sessions.Spec, error) {
	name, err := e.profileOf(t)
	if err != nil {
		return sessions.Spec{}, err
	}
	return e.cfg.Profiles[name].Spec(gateway.Identity{Agent: t.Agent(), Profile: name}, nil, time.Now())
}

func (e *env) toolName(t *Trace, c TraceCall) string {
	sep := e.cfg.Tools.Separator
	if sep == "" {
		sep = tools.DefaultSeparator
	}
	return t.Suite + sep + c.Tool
}

// replayDirect runs one trace through d as a fresh session.
func (e *env) replayDirect(ctx context.Context, d *gateway.Decider, store sessions.Store, t *Trace) (TraceResult, error) {
	e.clock.Set(e.opts.Start)
	spec, err := e.spec(t)
	if err != nil {
		return TraceResult{}, err
	}
	sess, _, err := store.Create(ctx, spec)
	if err != nil {
		return TraceResult{}, fmt.Errorf("open session: %w", err)
	}
	claims := map[string]any{"sub": sess.Agent, "profile": sess.Profile}
	tr := newTraceResult(t)
	for i, c := range t.Calls {
		e.clock.Set(e.opts.Start.Add(time.Duration(i+1) * e.opts.Step))
		begin := time.Now()
		out, err := d.Admit(ctx, gateway.Call{SessionID: sess.ID, Name: e.toolName(t, c), Args: c.args(), Claims: claims})
		elapsed := time.Since(begin)
		if errors.Is(err, gateway.ErrSessionEnded) {
			// The session ended by itself (idle timeout, lifetime): nothing
			// more goes through, as after a revoke.
			tr.add(policies.ActionRevoke, "session-ended", nil, 0, elapsed)
			break
		}
		if err != nil {
			return TraceResult{}, fmt.Errorf("call %d (%s): %w", i, c.Tool, err)
		}
		risk := 0.0
		if out.Session != nil {
			risk = out.Session.Risk
		}
		tr.add(out.Decision.Action, out.Decision.Rule, out.Flags, risk, elapsed)
		if out.Decision.Action == policies.ActionRevoke {
			break
		}
		if out.Forward {
			if _, err := d.Observe(ctx, sess.ID, out, gateway.ResultText(replay.Result(c.Replay()))); err != nil {
				return TraceResult{}, fmt.Errorf("call %d (%s): record result: %w", i, c.Tool, err)
			}
		}
	}
	return tr, nil
}

func newTraceResult(t *Trace) TraceResult {
	return TraceResult{ID: t.ID, Suite: t.Suite, Agent: t.Agent(), Label: t.Label, UserTask: t.UserTask,
		HarmfulCallIndex: t.HarmfulCallIndex, Decisions: []policies.Action{}, Rules: []string{},
		Flags: [][]string{}, Risk: []float64{}}
}

func (tr *TraceResult) add(a policies.Action, rule string, flags []policies.Flag, risk float64, took time.Duration) {
	kinds := make([]string, 0, len(flags))
	for _, f := range flags {
		kinds = append(kinds, f.Kind)
	}
	tr.Decisions = append(tr.Decisions, a)
	tr.Rules = append(tr.Rules, rule)
	tr.Flags = append(tr.Flags, kinds)
	tr.Risk = append(tr.Risk, risk)
	tr.Latency = append(tr.Latency, took)
}

// staticCatalog is the tool catalog of a replay: the tools the traces
// call, labelled as the config says. Nothing is forwarded through it.
type staticCatalog struct {
	list   []tools.Tool
	byName map[string]tools.Tool
}

var _ gateway.Upstreams = (*staticCatalog)(nil)

func (c *staticCatalog) Tools() []tools.Tool { return c.list }

func (c *staticCatalog) Tool(name string) (tools.Tool, bool) {
	t, ok := c.byName[name]
	return t, ok
}

func (c *staticCatalog) Call(context.Context, string, json.RawMessage, tools.CallOptions) (*mcp.CallToolResult, error) {
	return nil, errors.New("direct replay forwards nothing: recorded results are fed to the decision path")
}

func (c *staticCatalog) Resources() []tools.Resource                 { return nil }
func (c *staticCatalog) ResourceTemplates() []tools.ResourceTemplate { return nil }
func (c *staticCatalog) ReadResource(context.Context, string) (*mcp.ReadResourceResult, error) {
	return nil, errors.New("a replay has no resources")
}
func (c *staticCatalog) Prompts() []tools.Prompt { return nil }
func (c *staticCatalog) GetPrompt(context.Context, string, map[string]string) (*mcp.GetPromptResult, error) {
	return nil, errors.New("a replay has no prompts")
}
func (c *staticCatalog) Health() []tools.ServerHealth { return nil }

// stepClock is the replay's clock: it stands still until the replay moves
// it to the time of the next call.
type stepClock struct {
	mu sync.Mutex
	t  time.Time
}

var _ sessions.Clock = (*stepClock)(nil)

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *stepClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// AfterFunc never fires: replayed time only moves between calls, and
// nothing in a replay waits for it.
func (c *stepClock) AfterFunc(time.Duration, func()) sessions.Timer { return stoppedTimer{} }

type stoppedTimer struct{}

func (stoppedTimer) Stop() bool { return true }

// progress draws a one-line bar on a terminal writer.
type progress struct {
	w          io.Writer
	total, now int
	last       int
}

func newProgress(w io.Writer, total int) *progress { return &progress{w: w, total: total, last: -1} }

func (p *progress) advance() {
	p.now++
	if p.w == nil || p.total == 0 {
		return
	}
	pct := p.now * 100 / p.total
	if pct == p.last {
		return
	}
	p.last = pct
	const width = 30
	filled := p.now * width / p.total
	fmt.Fprintf(p.w, "\r[%s%s] %3d%% %d/%d traces", strings.Repeat("#", filled), strings.Repeat(".", width-filled), pct, p.now, p.total)
}

func (p *progress) done() {
	if p.w != nil && p.total > 0 {
		fmt.Fprintln(p.w)
	}
}
