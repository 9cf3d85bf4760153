package tools

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
)

// Relay carries what an upstream sends the agent while it serves one of that
// agent's requests: server-to-client requests (sampling, elicitation) and
// log notifications. The gateway implements it for the agent's MCP session.
type Relay interface {
	// Request asks the agent, and returns the agent's raw result. An error
	// that is a *RelayError keeps its JSON-RPC code on the way back.
	Request(ctx context.Context, method string, params json.RawMessage) (json.RawMessage, error)
	// Notify passes a notification on; it must not block for long.
	Notify(method string, params json.RawMessage)
}

// RelayError is a JSON-RPC error answered by the agent (or by the gateway on
// its behalf) to a relayed request.
type RelayError struct {
	Code    int
	Message string
}

func (e *RelayError) Error() string { return fmt.Sprintf("JSON-RPC error %d: %s", e.Code, e.Message) }

type relayCtxKey struct{}

// WithRelay returns a context whose upstream requests relay what the
// upstream sends back to r.
func WithRelay(ctx context.Context, r Relay) context.Context {
	return context.WithValue(ctx, relayCtxKey{}, r)
}

func relayFrom(ctx context.Context) Relay {
	r, _ := ctx.Value(relayCtxKey{}).(Relay)
	return r
}

// relayed are the server-to-client requests toolgate passes on. roots/list
// is not among them: an upstream connection is shared by every agent, and a
// server may ask for roots at any time, not only inside a request.
var relayed = map[string]bool{
	string(mcp.MethodSamplingCreateMessage): true,
	string(mcp.MethodElicitationCreate):     true,
}

// upstreamCapabilities are the client capabilities toolgate declares to its
// upstreams: those it can relay to agents.
func upstreamCapabilities() mcp.ClientCapabilities {
	return mcp.ClientCapabilities{
		Sampling:    &mcp.SamplingCapability{},
		Elicitation: &mcp.ElicitationCapability{Form: &struct{}{}},
	}
}

// relaySet tracks the relays of requests in flight on one connection.
type relaySet struct {
	mu sync.Mutex
	m  map[*relayEntry]struct{}
}

type relayEntry struct{ r Relay }

// add registers r while a request is in flight; remove takes it out.
func (s *relaySet) add(r Relay) *relayEntry {
	e := &relayEntry{r: r}
	s.mu.Lock()
	if s.m == nil {
		s.m = map[*relayEntry]struct{}{}
	}
	s.m[e] = struct{}{}
	s.mu.Unlock()
	return e
}

func (s *relaySet) remove(e *relayEntry) {
	s.mu.Lock()
	delete(s.m, e)
	s.mu.Unlock()
}

// sole returns the relay of the only agent request in flight, or nil when
// there is none or more than one. Over stdio, and for notifications over
// any transport, nothing says which request an upstream message belongs to;
// guessing could hand one agent's data to another, so toolgate does not.
func (s *relaySet) sole() Relay {
	s.mu.Lock()
	defer s.mu.Unlock()
	var only Relay
	for e := range s.m {
		if only != nil && only != e.r {
			return nil
		}
		only = e.r
	}
	return only
}

// errNoRelay answers an upstream request that toolgate cannot attribute.
var errNoRelay = &RelayError{Code: mcp.INVALID_REQUEST,
	Message: "toolgate: this request is not part of an agent's call (or several calls are in flight), so no agent can answer it"}

// serveUpstreamRequest answers requests an upstream sends on connection c:
// ping itself, sampling and elicitation by asking the agent whose request the
// upstream is serving.
func (m *Manager) serveUpstreamRequest(server string, c *conn) transport.RequestHandler {
	return func(ctx context.Context, req transport.JSONRPCRequest) (*transport.JSONRPCResponse, error) {
		if req.Method == string(mcp.MethodPing) {
			return &transport.JSONRPCResponse{JSONRPC: mcp.JSONRPC_VERSION, ID: req.ID, Result: json.RawMessage(`{}`)}, nil
		}
		if !relayed[req.Method] {
			return rpcErrorResponse(req.ID, mcp.METHOD_NOT_FOUND, "toolgate does not relay "+req.Method), nil
		}
		// Streamable HTTP runs this handler under the context of the request
		// whose response stream carried it; stdio and SSE do not.
		r := relayFrom(ctx)
		if r == nil {
			r = c.relays.sole()
		}
		if r == nil {
			m.log.Warn("upstream request not relayed", "server", server, "method", req.Method, "reason", errNoRelay.Message)
			return rpcErrorResponse(req.ID, errNoRelay.Code, errNoRelay.Message), nil
		}
		params, err := json.Marshal(req.Params)
		if err != nil {
			return rpcErrorResponse(req.ID, mcp.INVALID_PARAMS, "toolgate: params: "+err.Error()), nil
		}
		res, err := r.Request(ctx, req.Method, params)
		if err != nil {
			var re *RelayError
			if errors.As(err, &re) {
				return rpcErrorResponse(req.ID, re.Code, re.Message), nil
			}
			return rpcErrorResponse(req.ID, mcp.INTERNAL_ERROR, err.Error()), nil
		}
		return &transport.JSONRPCResponse{JSONRPC: mcp.JSONRPC_VERSION, ID: req.ID, Result: res}, nil
	}
}

func rpcErrorResponse(id mcp.RequestId, code int, msg string) *transport.JSONRPCResponse {
	return transport.NewJSONRPCErrorResponse(id, code, msg, nil)
}

// relayNotification passes a log notification to the agent whose request
// is the only one in flight on c; otherwise it is only logged here.
func (m *Manager) relayNotification(c *conn, n mcp.JSONRPCNotification) {
	r := c.relays.sole()
	if r == nil {
		m.log.Debug("upstream notification not relayed: no single agent request in flight", "method", n.Method)
		return
	}
	params, err := json.Marshal(n.Params)
	if err != nil {
		return
	}
	r.Notify(n.Method, params)
}

// Complete asks the upstream that owns ref for completions of an argument:
// a prompt by its catalog name, or a resource template by its URI template.
// An upstream without the completions capability completes nothing.
func (m *Manager) Complete(ctx context.Context, ref any, arg mcp.CompleteArgument, cctx mcp.CompleteContext) (*mcp.Completion, error) {
	m.mu.RLock()
	var server string
	var upstreamRef map[string]any
	switch r := ref.(type) {
	case mcp.PromptReference:
		if p, ok := m.cat.prompt[r.Name]; ok {
			server, upstreamRef = p.Server, map[string]any{"type": "ref/prompt", "name": p.Upstream}
		}
	case mcp.ResourceReference:
		for _, t := range m.cat.templates {
			if t.URITemplate == r.URI {
				server, upstreamRef = t.Server, map[string]any{"type": "ref/resource", "uri": r.URI}
				break
			}
		}
	}
	var u *upstream
	var c *conn
	if server != "" {
		u = m.byName[server]
		c = u.conn
	}
	m.mu.RUnlock()
	switch {
	case server == "":
		return nil, fmt.Errorf("complete: no prompt or resource template matches %v", ref)
	case c == nil:
		return nil, fmt.Errorf("complete: server %q is unavailable", server)
	}
	if c.client.GetServerCapabilities().Completions == nil {
		return &mcp.Completion{Values: []string{}}, nil
	}
	params := map[string]any{"ref": upstreamRef, "argument": arg}
	if len(cctx.Arguments) > 0 {
		params["context"] = cctx
	}
	ctx, cancel := context.WithTimeout(ctx, u.cfg.Timeout)
	defer cancel()
	raw, err := m.rpc(ctx, c, string(mcp.MethodCompletionComplete), params)
	if err != nil {
		m.suspect(c, err)
		return nil, fmt.Errorf("complete from server %q: %w", server, err)
	}
	var res struct {
		Completion mcp.Completion `json:"completion"`
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		return nil, fmt.Errorf("complete from server %q: decode result: %w", server, err)
	}
	if res.Completion.Values == nil {
		res.Completion.Values = []string{}
	}
	return &res.Completion, nil
}
