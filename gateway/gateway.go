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
	"sync"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/toolgate/toolgate/tools"
)

// Config is the agent-facing side of the gateway.
type Config struct {
	// Listen is the address agents connect to. Default "127.0.0.1:8080".
	Listen string `yaml:"listen"`
	// MaxBodyBytes bounds one posted JSON-RPC message. Default 4 MiB.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// MaxDepth bounds the nesting of a posted message. Default 64.
	MaxDepth int `yaml:"max_depth"`
}

// Validate fills defaults and checks the values.
func (c *Config) Validate() error {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8080"
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
	return nil
}

// Upstreams is what the gateway needs from the tool servers behind it;
// *tools.Manager implements it.
type Upstreams interface {
	Tools() []tools.Tool
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
	// Logger receives the gateway's logs. Nil: discard.
	Logger *slog.Logger
	// Version is reported to agents as the server version. Empty: "dev".
	Version string
}

// Gateway is the MCP server agents talk to.
type Gateway struct {
	cfg Config
	up  Upstreams
	log *slog.Logger

	mcp        *server.MCPServer
	streamable *server.StreamableHTTPServer
	sse        *server.SSEServer
	handler    http.Handler

	syncMu sync.Mutex // serialises Sync
}

// New builds a gateway in front of up. It does no I/O; call Sync once the
// upstreams are connected (and whenever their catalog changes) and serve
// Handler.
func New(cfg Config, up Upstreams, opts Options) (*Gateway, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	g := &Gateway{cfg: cfg, up: up, log: opts.Logger}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	version := opts.Version
	if version == "" {
		version = "dev"
	}
	g.mcp = server.NewMCPServer("toolgate", version,
		server.WithToolCapabilities(true),
		server.WithResourceCapabilities(false, true),
		server.WithPromptCapabilities(true),
		server.WithRecovery(),
	)
	g.streamable = server.NewStreamableHTTPServer(g.mcp,
		server.WithEndpointPath("/mcp"),
		// Keeps progress notifications that race the final response
		// (notes/mcp-go.md pitfall 7) for clients that use sessions.
		server.WithEventStore(server.NewInMemoryEventStore()),
		server.WithStreamableHTTPLogger(g.log),
	)
	g.sse = server.NewSSEServer(g.mcp,
		server.WithSSEEndpoint("/sse"),
		server.WithMessageEndpoint("/message"),
		server.WithUseFullURLForMessageEndpoint(false),
	)
	mux := http.NewServeMux()
	mux.Handle("/mcp", edgeHandler(g.streamable, cfg.MaxBodyBytes, cfg.MaxDepth))
	mux.Handle("GET /sse", g.sse.SSEHandler())
	mux.Handle("/message", edgeHandler(g.sse.MessageHandler(), cfg.MaxBodyBytes, cfg.MaxDepth))
	mux.HandleFunc("GET /healthz", g.serveHealth)
	g.handler = mux
	return g, nil
}

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

// callTool forwards one allowed tools/call to its upstream.
func (g *Gateway) callTool(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	opts := tools.CallOptions{}
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
	res, err := g.up.Call(ctx, req.Params.Name, req.Params.RawArguments, opts)
	if err != nil {
		return toolFailure(err), nil
	}
	return res, nil
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
