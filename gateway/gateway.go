// Package gateway serves MCP to agents and relays what they are allowed to
// do to the upstream tool servers.
package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/toolgate/toolgate/policies"
	"github.com/toolgate/toolgate/sessions"
	"github.com/toolgate/toolgate/tools"
)

// Config is the agent-facing side of the gateway.
type Config struct {
	// Listen is the address agents connect to. Default "127.0.0.1:8080".
	Listen string `yaml:"listen"`
	// PublicURL is the base URL agents reach the gateway at, used in
	// OAuth metadata. Default "http://" + Listen.
	PublicURL string `yaml:"public_url"`
	// MaxBodyBytes bounds one posted JSON-RPC message. Default 4 MiB.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// MaxDepth bounds the nesting of a posted message. Default 64.
	MaxDepth int `yaml:"max_depth"`
	// ApprovalTimeout bounds how long a call waits for approval. Default 5m.
	ApprovalTimeout time.Duration `yaml:"approval_timeout"`
}

// Validate fills defaults and checks the values.
func (c *Config) Validate() error {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8080"
	}
	if c.PublicURL == "" {
		c.PublicURL = "http://" + c.Listen
	}
	c.PublicURL = strings.TrimSuffix(c.PublicURL, "/")
	if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("gateway.public_url: %q must be an http or https URL", c.PublicURL)
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.MaxBodyBytes < 1024 {
		return fmt.Errorf("gateway.max_body_bytes: %d is below the minimum of 1024", c.MaxBodyBytes)
	}
	if c.MaxDepth == 0 {
		c.MaxDepth = DefaultMaxDepth
	}
	if c.MaxDepth < 4 || c.MaxDepth > 1000 {
		return fmt.Errorf("gateway.max_depth: %d is outside 4..1000", c.MaxDepth)
	}
	if c.ApprovalTimeout < 0 {
		return fmt.Errorf("gateway.approval_timeout: %v must be positive", c.ApprovalTimeout)
	}
	return nil
}

// Upstreams is what the gateway needs from the tool servers behind it;
// *tools.Manager implements it.
type Upstreams interface {
	Tools() []tools.Tool
	Tool(name string) (tools.Tool, bool)
	Call(ctx context.Context, name string, args json.RawMessage, opts tools.CallOptions) (*mcp.CallToolResult, error)
	Resources() []tools.Resource
	ResourceTemplates() []tools.ResourceTemplate
	ReadResource(ctx context.Context, uri string) (*mcp.ReadResourceResult, error)
	Prompts() []tools.Prompt
	GetPrompt(ctx context.Context, name string, args map[string]string) (*mcp.GetPromptResult, error)
	Health() []tools.ServerHealth
}

var _ Upstreams = (*tools.Manager)(nil)

// Options are the gateway's collaborators. Nil fields take the documented
// defaults.
type Options struct {
	// Store keeps the sessions. Required.
	Store sessions.Store
	// Auth checks agent credentials. Nil: only session tokens already in
	// the store are accepted, and the token endpoint refuses everyone.
	Auth *Authenticator
	// Profiles by name: what sessions of each profile may do.
	Profiles map[string]*ProfileConfig
	// Policy decides calls. Nil: every call in scope is allowed.
	Policy Policy
	// Logger receives the gateway's logs. Nil: discard.
	Logger *slog.Logger
	// Now is the clock. Nil: time.Now.
	Now func() time.Time
	// Version is reported to agents as the server version. Empty: "dev".
	Version string
	// Telemetry is where spans, metrics and audit events go. Zero: nowhere.
	Telemetry Telemetry
}

// Gateway is the MCP server agents talk to.
type Gateway struct {
	cfg      Config
	up       Upstreams
	store    sessions.Store
	auth     *Authenticator
	profiles map[string]*ProfileConfig
	decider  *Decider
	approve  *Approvals
	log      *slog.Logger
	now      func() time.Time
	live     *liveRegistry
	tokens   *authCache
	metrics  *Metrics
	tel      *gatewayTelemetry // spans, metrics, audit (telemetry.go)

	mcp        *server.MCPServer
	streamable *server.StreamableHTTPServer
	sse        *server.SSEServer
	handler    http.Handler

	info   mcp.Implementation        // the server's name and version, as agents see them
	syncMu sync.Mutex                // serialises Sync
	fast   atomic.Pointer[fastTools] // tools a call may take the direct path to (fastcall.go)
}

// New builds a gateway in front of up. It does no I/O; call Sync once the
// upstreams are connected (and whenever their catalog changes), run Watch
// to follow session events, and serve Handler.
func New(cfg Config, up Upstreams, opts Options) (*Gateway, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Store == nil {
		return nil, errors.New("gateway: a session store is required")
	}
	for name, p := range opts.Profiles {
		if err := p.validate(name); err != nil {
			return nil, err
		}
	}
	g := &Gateway{cfg: cfg, up: up, store: opts.Store, auth: opts.Auth, profiles: opts.Profiles,
		log: opts.Logger, now: opts.Now, live: newLiveRegistry(), tokens: newAuthCache(), metrics: &Metrics{}}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	if g.now == nil {
		g.now = time.Now
	}
	if g.profiles == nil {
		g.profiles = map[string]*ProfileConfig{}
	}
	g.approve = &Approvals{Timeout: cfg.ApprovalTimeout, Now: g.now}
	g.decider = &Decider{Store: g.store, Policy: opts.Policy, Profiles: g.profiles, Tool: up.Tool,
		Catalog: up.Tools, Approvals: g.approve, Now: g.now,
		Detectors: func(profile string) *policies.Detectors {
			if p := g.profiles[profile]; p != nil {
				return p.detectors
			}
			return nil
		}}
	version := opts.Version
	if version == "" {
		version = "dev"
	}
	g.info = mcp.Implementation{Name: "toolgate", Version: version}
	// Telemetry (telemetry.go): before the hooks and handlers that use it.
	tel, err := newGatewayTelemetry(opts.Telemetry, g)
	if err != nil {
		return nil, err
	}
	g.tel = tel
	hooks := &server.Hooks{}
	g.registerHooks(hooks)
	g.registerRelayHooks(hooks) // relay_subscribe.go
	g.registerTelemetryHooks(hooks)
	g.mcp = server.NewMCPServer(g.info.Name, g.info.Version, append([]server.ServerOption{
		server.WithToolCapabilities(true),
		server.WithResourceCapabilities(true, true), // subscribe: relay_subscribe.go
		server.WithPromptCapabilities(true),
		server.WithRecovery(),
		server.WithHooks(hooks),
		server.WithToolFilter(g.filterTools),
	}, g.relayOptions()...)...) // relay.go: logging, completion, elicitation
	g.mcp.EnableSampling() // relay.go: upstream sampling requests go to the agent
	g.streamable = server.NewStreamableHTTPServer(g.mcp,
		server.WithEndpointPath("/mcp"),
		// Keeps progress notifications that race the final response
		// (notes/mcp-go.md pitfall 7) for clients that use sessions.
		server.WithEventStore(newBoundedEventStore(eventsPerStream, eventSessions)),
		server.WithStreamableHTTPLogger(g.log),
	)
	g.sse = server.NewSSEServer(g.mcp,
		server.WithSSEEndpoint("/sse"),
		server.WithMessageEndpoint("/message"),
		server.WithUseFullURLForMessageEndpoint(false),
	)
	mux := http.NewServeMux()
	mux.Handle("/mcp", edgeHandler(g.traceHandler(g.authHandler(g.fastCalls(g.streamable))), cfg.MaxBodyBytes, cfg.MaxDepth))
	mux.Handle("GET /sse", g.authHandler(g.sse.SSEHandler()))
	mux.Handle("/message", edgeHandler(g.traceHandler(g.authHandler(g.sse.MessageHandler())), cfg.MaxBodyBytes, cfg.MaxDepth))
	mux.HandleFunc("POST /oauth/token", g.serveToken)
	mux.HandleFunc("/oauth/authorize", g.serveAuthorize)
	mux.HandleFunc("GET /.well-known/oauth-protected-resource", g.serveResourceMetadata)
	mux.HandleFunc("GET /.well-known/oauth-protected-resource/mcp", g.serveResourceMetadata)
	mux.HandleFunc("GET /.well-known/oauth-authorization-server", g.serveAuthServerMetadata)
	mux.HandleFunc("GET /healthz", g.serveHealth)
	g.handler = mux
	return g, nil
}

func (g *Gateway) publicURL() string { return g.cfg.PublicURL }

// Decider is the gateway's decision path, for replaying traces through it.
func (g *Gateway) Decider() *Decider { return g.decider }

// Approvals are the calls waiting for a person's decision.
func (g *Gateway) Approvals() *Approvals { return g.approve }

// Metrics are the gateway's counters.
func (g *Gateway) Metrics() *Metrics { return g.metrics }

// Bounds of the events kept for resuming Streamable HTTP streams.
const (
	eventsPerStream = 256
	eventSessions   = 10_000
)

// Handler serves MCP over Streamable HTTP at /mcp, the legacy SSE
// transport at /sse and /message, and upstream health at /healthz.
func (g *Gateway) Handler() http.Handler { return g.handler }

// Close ends the agents' open streams.
func (g *Gateway) Close(ctx context.Context) error {
	g.sse.CloseSessions()
	g.streamable.CloseSessions(ctx)
	return nil
}

// Sync publishes the upstreams' current catalog to agents. Connected
// agents get notifications/tools/list_changed (and the resource and prompt
// equivalents).
func (g *Gateway) Sync() {
	g.syncMu.Lock()
	defer g.syncMu.Unlock()

	var serverTools []server.ServerTool
	for _, t := range g.up.Tools() {
		mt, err := t.MCP()
		if err != nil {
			g.log.Warn("tool left out of the catalog", "tool", t.Name, "err", err)
			continue
		}
		serverTools = append(serverTools, server.ServerTool{Tool: mt, Handler: g.callTool})
	}
	if err := setTools(g.mcp, serverTools); err != nil {
		g.log.Error("publishing the tool catalog", "err", err)
		g.fast.Store(nil)
	} else {
		ft := newFastTools(serverTools)
		g.fast.Store(&ft)
	}

	var resources []server.ServerResource
	for _, r := range g.up.Resources() {
		mr, err := r.MCP()
		if err != nil {
			g.log.Warn("resource left out of the catalog", "resource", r.Name, "err", err)
			continue
		}
		resources = append(resources, server.ServerResource{Resource: mr, Handler: g.readResource})
	}
	g.mcp.SetResources(resources...)

	var templates []server.ServerResourceTemplate
	for _, r := range g.up.ResourceTemplates() {
		mt, err := r.MCP()
		if err != nil {
			g.log.Warn("resource template left out of the catalog", "template", r.Name, "err", err)
			continue
		}
		templates = append(templates, server.ServerResourceTemplate{Template: mt, Handler: g.readResource})
	}
	g.mcp.SetResourceTemplates(templates...)

	var prompts []server.ServerPrompt
	for _, p := range g.up.Prompts() {
		mp, err := p.MCP()
		if err != nil {
			g.log.Warn("prompt left out of the catalog", "prompt", p.Name, "err", err)
			continue
		}
		prompts = append(prompts, server.ServerPrompt{Prompt: mp, Handler: g.getPrompt})
	}
	g.mcp.SetPrompts(prompts...)
}

// setTools replaces the server's tools. mcp-go panics on a tool it finds
// invalid; that must not take the gateway down.
func setTools(s *server.MCPServer, list []server.ServerTool) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("tool catalog refused: %v", r)
		}
	}()
	s.SetTools(list...)
	return nil
}

// callTool decides one tools/call in its session and forwards it to its
// upstream if allowed.
func (g *Gateway) callTool(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	as := agentSessionFrom(ctx)
	if as == nil {
		return mcp.NewToolResultError("toolgate: this call has no session"), nil
	}
	actx, ct := g.startCall(ctx, as, req) // telemetry.go
	out, err := g.decider.Admit(actx, Call{SessionID: as.ID, Name: req.Params.Name, Args: req.Params.RawArguments,
		Claims: as.Claims, BeforeEnd: as.keepAlive})
	admitted := time.Now()
	ct.admitted(ctx, out, err) // spans, metrics, audit (refusals stored before the answer)
	if err != nil {
		return g.admitFailure(as, req.Params.Name, err), nil
	}
	g.metrics.count(out.Decision.Action)
	if out.Narrowed {
		g.notifyToolsChanged(as.ID)
	}
	if !out.Forward {
		g.log.Info("call refused", "session", as.ID, "agent", as.Agent, "tool", req.Params.Name,
			"decision", out.Decision.Action, "rule", out.Decision.Rule)
		if out.Decision.Action == policies.ActionRevoke {
			// This request carries the answer; the session's other
			// requests end now, this one once it is answered.
			as.endAfterAnswer()
		}
		return mcp.NewToolResultError(out.Message), nil
	}

	// The upstream learns which session and call this is, for its own
	// audit; the session id is not a credential.
	opts := tools.CallOptions{Meta: map[string]any{metaSession: as.ID, metaCall: out.Seq}}
	if meta := req.Params.Meta; meta != nil && meta.ProgressToken != nil {
		opts.ProgressToken = meta.ProgressToken
		srv := server.ServerFromContext(ctx)
		opts.OnProgress = func(p mcp.ProgressNotificationParams) {
			params := map[string]any{"progressToken": p.ProgressToken, "progress": p.Progress}
			if p.Total != 0 {
				params["total"] = p.Total
			}
			if p.Message != "" {
				params["message"] = p.Message
			}
			if err := srv.SendNotificationToClient(ctx, string(mcp.MethodNotificationProgress), params); err != nil {
				g.log.Debug("progress not delivered", "tool", req.Params.Name, "err", err)
			}
		}
	}
	// A session's forwards hold its gate: ending the session (on a
	// revoke or freeze from any replica) waits for them, so that once it is
	// acknowledged this replica sends nothing more of the session.
	done, ok := g.live.beginForward(as.ID, admitted)
	if !ok {
		// The session ended after this call was admitted and before it
		// left: it does not leave.
		return mcp.NewToolResultError("toolgate: this session has ended; the call was not made"), nil
	}
	uctx, uspan := ct.startUpstream(ctx, out, &opts) // telemetry.go: span, _meta traceparent
	res, err := g.up.Call(uctx, req.Params.Name, req.Params.RawArguments, opts)
	done()
	ct.endUpstream(ctx, uspan, out, admitted, res, err)
	if err != nil {
		if ctx.Err() != nil {
			g.log.Info("call cancelled", "session", as.ID, "tool", req.Params.Name)
		}
		return toolFailure(err), nil
	}
	if _, err := g.decider.Observe(context.WithoutCancel(ctx), as.ID, out, ResultText(res)); err != nil {
		g.log.Warn("call result not recorded", "session", as.ID, "tool", req.Params.Name, "err", err)
	}
	return res, nil
}

// Keys of the _meta toolgate adds to forwarded calls.
const (
	metaSession = "io.toolgate/session"
	metaCall    = "io.toolgate/call"
)

// ResultText is what the detectors read of a tool result: its text
// contents and its structured content.
func ResultText(r *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range r.Content {
		switch c := c.(type) {
		case mcp.TextContent:
			b.WriteString(c.Text)
			b.WriteByte('\n')
		case mcp.EmbeddedResource:
			if t, ok := c.Resource.(mcp.TextResourceContents); ok {
				b.WriteString(t.Text)
				b.WriteByte('\n')
			}
		}
	}
	if len(r.RawStructuredContent) > 0 {
		b.Write(r.RawStructuredContent)
	}
	return b.String()
}

// admitFailure answers a call that could not be decided.
func (g *Gateway) admitFailure(as *agentSession, tool string, err error) *mcp.CallToolResult {
	switch {
	case errors.Is(err, ErrStoreDown):
		g.metrics.storeErrors.Add(1)
		g.log.Warn("call refused: session store unavailable", "session", as.ID, "tool", tool, "err", err)
		return mcp.NewToolResultError("toolgate: the session store is unavailable, so the call was not made; retry shortly")
	case errors.Is(err, ErrSessionEnded):
		var se *sessions.StateError
		if errors.As(err, &se) {
			return mcp.NewToolResultError(fmt.Sprintf("toolgate: this session is %s; the call was not made", se.State))
		}
		return mcp.NewToolResultError("toolgate: this session has ended; the call was not made")
	}
	g.log.Error("call could not be decided", "session", as.ID, "tool", tool, "err", err)
	return mcp.NewToolResultError("toolgate: the call could not be checked, so it was not made: " + err.Error())
}

// filterTools shows a session only the tools its scope permits. mcp-go
// also filters at call time; there every catalog tool stays, so that a call
// outside the scope reaches the decision path and is refused (and counted,
// or revokes) as the profile says.
func (g *Gateway) filterTools(ctx context.Context, list []mcp.Tool) []mcp.Tool {
	if methodFrom(ctx) == string(mcp.MethodToolsCall) {
		return list
	}
	as := agentSessionFrom(ctx)
	if as == nil || as.Snapshot == nil {
		return nil
	}
	out := list[:0:0]
	for _, t := range list {
		if ct, ok := g.up.Tool(t.Name); ok && Permits(as.Snapshot, ct) {
			out = append(out, t)
		}
	}
	return out
}

// notifyToolsChanged tells the agent of a session, where its transport
// allows, that its tool list changed.
func (g *Gateway) notifyToolsChanged(sessionID string) {
	for _, t := range g.live.transports(sessionID) {
		if err := g.mcp.SendNotificationToSpecificClient(t, string(mcp.MethodNotificationToolsListChanged), nil); err != nil {
			g.log.Debug("list_changed not delivered", "session", sessionID, "transport", t, "err", err)
		}
	}
}

// endSession cancels the session's requests on this replica (in-flight
// calls and open streams) and closes its MCP transport sessions.
func (g *Gateway) endSession(sessionID string) {
	for _, t := range g.live.end(sessionID) {
		g.mcp.UnregisterSession(context.Background(), t)
	}
}

// Watch follows the store's session events until ctx ends: a revoked,
// frozen or expired session loses its in-flight calls and open streams on
// this replica; a narrowed one is told its tools changed.
func (g *Gateway) Watch(ctx context.Context) error {
	events, err := g.store.Subscribe(ctx)
	if err != nil {
		return err
	}
	// Token lookups are reused only while this replica hears of the changes that end them.
	g.tokens.enable(true)
	defer g.tokens.enable(false)
	for ev := range events {
		g.tokens.drop(ev.SessionID)
		switch ev.Kind {
		case sessions.EventRevoked, sessions.EventFrozen, sessions.EventExpired:
			g.log.Info("session ended on this replica", "session", ev.SessionID, "agent", ev.Agent, "event", ev.Kind, "reason", ev.Reason)
			g.endSession(ev.SessionID)
			// The revoking replica waits for this before it answers.
			if err := g.store.Ack(ctx, ev); err != nil {
				g.log.Warn("session event not acknowledged", "session", ev.SessionID, "event", ev.Kind, "err", err)
			}
		case sessions.EventNarrowed:
			g.notifyToolsChanged(ev.SessionID)
		}
	}
	return ctx.Err()
}

// toolFailure turns an upstream failure into a tool result the agent can
// read: which server and tool failed and how. mcp-go would otherwise turn a
// Go error into a bare -32603 (notes/mcp-go.md pitfall 3).
func toolFailure(err error) *mcp.CallToolResult {
	msg := "toolgate: " + err.Error()
	var ce *tools.CallError
	if errors.As(err, &ce) && ce.Kind == "unknown_tool" {
		msg = "toolgate: " + err.Error() + " (call tools/list for the current catalog)"
	}
	return mcp.NewToolResultError(msg)
}

func (g *Gateway) readResource(ctx context.Context, req mcp.ReadResourceRequest) ([]mcp.ResourceContents, error) {
	res, err := g.up.ReadResource(ctx, req.Params.URI)
	if err != nil {
		return nil, err
	}
	return res.Contents, nil
}

func (g *Gateway) getPrompt(ctx context.Context, req mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
	return g.up.GetPrompt(ctx, req.Params.Name, req.Params.Arguments)
}

func (g *Gateway) serveHealth(w http.ResponseWriter, _ *http.Request) {
	health := g.up.Health()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"upstreams": health})
}
