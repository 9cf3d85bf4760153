package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/toolgate/toolgate/tools"
)

// What toolgate relays between agents and upstreams besides tool calls:
// sampling and elicitation requests and log notifications an upstream sends
// while it serves an agent's call go to that agent (tools.Relay); completion
// requests go to the upstream that owns the prompt or resource template.

// agentRelay is a tools.Relay for one agent request: what the upstream
// sends goes to the agent's MCP session, through mcp-go's server.
type agentRelay struct {
	srv *server.MCPServer
	// ctx is the agent request's context: it names the agent's MCP session
	// and ends with the request.
	ctx context.Context
}

var _ tools.Relay = (*agentRelay)(nil)

// Request asks the agent for a sampling or elicitation answer.
func (r *agentRelay) Request(ctx context.Context, method string, params json.RawMessage) (json.RawMessage, error) {
	// Both contexts bound the wait: the agent request's (it names the
	// agent's MCP session, and ends when the agent goes away) and the
	// upstream's (its own deadline).
	reqCtx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, cancel)
	defer stop()

	var res any
	var err error
	switch method {
	case string(mcp.MethodSamplingCreateMessage):
		var req mcp.CreateMessageRequest
		if err := json.Unmarshal(params, &req.CreateMessageParams); err != nil {
			return nil, &tools.RelayError{Code: mcp.INVALID_PARAMS, Message: "toolgate: sampling params: " + err.Error()}
		}
		req.Method = method
		res, err = r.srv.RequestSampling(reqCtx, req)
	case string(mcp.MethodElicitationCreate):
		var req mcp.ElicitationRequest
		if err := json.Unmarshal(params, &req.Params); err != nil {
			return nil, &tools.RelayError{Code: mcp.INVALID_PARAMS, Message: "toolgate: elicitation params: " + err.Error()}
		}
		req.Method = method
		res, err = r.srv.RequestElicitation(reqCtx, req)
	default:
		return nil, &tools.RelayError{Code: mcp.METHOD_NOT_FOUND, Message: "toolgate does not relay " + method}
	}
	if err != nil {
		return nil, relayFailure(method, err)
	}
	out, err := json.Marshal(res)
	if err != nil {
		return nil, fmt.Errorf("relay %s: encode the agent's answer: %w", method, err)
	}
	return out, nil
}

// relayFailure keeps the agent's JSON-RPC error code where mcp-go exposes it.
func relayFailure(method string, err error) error {
	if errors.Is(err, server.ErrServerInitiatedRequestUnsupported) {
		return &tools.RelayError{Code: mcp.METHOD_NOT_FOUND, Message: "toolgate: the agent's protocol version has no " + method + " requests"}
	}
	return &tools.RelayError{Code: mcp.INTERNAL_ERROR, Message: fmt.Sprintf("toolgate: the agent did not answer %s: %v", method, err)}
}

// Notify passes an upstream notification (a log message) to the agent.
func (r *agentRelay) Notify(method string, params json.RawMessage) {
	var m map[string]any
	if err := json.Unmarshal(params, &m); err != nil {
		return
	}
	if s := callStreamFrom(r.ctx); s != nil {
		_ = s.notify(method, m) // a call on the direct path (fastcall.go)
		return
	}
	_ = r.srv.SendNotificationToClient(r.ctx, method, m)
}

// relayMiddleware gives every forwarded tool call a relay back to the agent
// that made it.
func (g *Gateway) relayMiddleware(next server.ToolHandlerFunc) server.ToolHandlerFunc {
	return func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return next(tools.WithRelay(ctx, &agentRelay{srv: g.mcp, ctx: ctx}), req)
	}
}

// Completer is what the gateway needs to relay completion/complete;
// *tools.Manager implements it. Upstreams without it complete nothing.
type Completer interface {
	Complete(ctx context.Context, ref any, arg mcp.CompleteArgument, cctx mcp.CompleteContext) (*mcp.Completion, error)
}

var _ Completer = (*tools.Manager)(nil)

// completions relays completion/complete to the upstreams.
type completions struct{ g *Gateway }

func (c completions) complete(ctx context.Context, ref any, arg mcp.CompleteArgument, cctx mcp.CompleteContext) (*mcp.Completion, error) {
	comp, ok := c.g.up.(Completer)
	if !ok || agentSessionFrom(ctx) == nil {
		return &mcp.Completion{Values: []string{}}, nil
	}
	return comp.Complete(ctx, ref, arg, cctx)
}

// CompletePromptArgument implements server.PromptCompletionProvider.
func (c completions) CompletePromptArgument(ctx context.Context, prompt string, arg mcp.CompleteArgument, cctx mcp.CompleteContext) (*mcp.Completion, error) {
	return c.complete(ctx, mcp.PromptReference{Type: "ref/prompt", Name: prompt}, arg, cctx)
}

// CompleteResourceArgument implements server.ResourceCompletionProvider.
func (c completions) CompleteResourceArgument(ctx context.Context, uri string, arg mcp.CompleteArgument, cctx mcp.CompleteContext) (*mcp.Completion, error) {
	return c.complete(ctx, mcp.ResourceReference{Type: "ref/resource", URI: uri}, arg, cctx)
}

// relayOptions are the mcp-go server options that turn relaying on.
func (g *Gateway) relayOptions() []server.ServerOption {
	c := completions{g: g}
	return []server.ServerOption{
		server.WithLogging(),
		server.WithCompletions(),
		server.WithPromptCompletionProvider(c),
		server.WithResourceCompletionProvider(c),
		server.WithElicitation(),
		server.WithToolHandlerMiddleware(g.relayMiddleware),
	}
}
