package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"sync"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
	"go.opentelemetry.io/otel/trace"

	"github.com/toolgate/toolgate/internal/telemetry"
)

// Tool calls of agents on protocol revision 2026-07-28 are answered here,
// without mcp-go's per-request machinery: for every such POST mcp-go makes
// an ephemeral session (with a 100-slot notification channel), starts a
// goroutine to forward its notifications, and decodes the body half a
// dozen times — most of what mcp-go costs a call. The revision keeps no
// session and sends no server requests, so a call needs none of that.
//
// Only the plain case is taken: one tools/call, its revision stated alike
// in the header and in _meta with the client's capabilities, on a tool of
// the catalog with no parameter bound to a header, without a progress
// token, task or multi-round-trip answers. Everything else — and every
// request mcp-go would refuse — goes to mcp-go as before.

// fastTools are the catalog's tools a call may take the direct path to:
// those whose parameters mcp-go need not compare with request headers and
// that can be called without a task.
type fastTools map[string]bool

func newFastTools(list []server.ServerTool) fastTools {
	ft := make(fastTools, len(list))
	for _, t := range list {
		if t.Tool.Execution != nil && t.Tool.Execution.TaskSupport == mcp.TaskSupportRequired {
			continue
		}
		if mcp.ExtractParamHeaderBindings(&t.Tool) != nil {
			continue
		}
		ft[t.Tool.Name] = true
	}
	return ft
}

// callParams is what the direct path reads of a tools/call's params.
// The fields it does not take are read only to decline the call.
type callParams struct {
	Name      string          `json:"name"`
	Arguments json.RawMessage `json:"arguments"`
	Meta      *struct {
		ProtocolVersion    string                  `json:"io.modelcontextprotocol/protocolVersion"`
		ClientCapabilities *mcp.ClientCapabilities `json:"io.modelcontextprotocol/clientCapabilities"`
		ProgressToken      json.RawMessage         `json:"progressToken"`
	} `json:"_meta"`
	Task           json.RawMessage `json:"task"`
	InputResponses json.RawMessage `json:"inputResponses"`
	RequestState   json.RawMessage `json:"requestState"`
}

// fastCalls answers the plain tool calls of 2026-07-28 agents itself and
// passes every other request to next (mcp-go). It runs after
// authentication: the request's context holds its agent session.
func (g *Gateway) fastCalls(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !g.serveFastCall(w, r) {
			next.ServeHTTP(w, r)
		}
	})
}

// serveFastCall answers r and reports true, or reports false having written
// nothing.
func (g *Gateway) serveFastCall(w http.ResponseWriter, r *http.Request) bool {
	ctx := r.Context()
	if r.Method != http.MethodPost || methodFrom(ctx) != string(mcp.MethodToolsCall) {
		return false
	}
	version := r.Header.Get(mcp.HeaderProtocolVersion)
	if !mcp.IsModernProtocol(version) || !mcp.IsValidProtocolVersion(version) ||
		r.Header.Get(mcp.HeaderLastEventID) != "" {
		return false
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return false
	}
	as := agentSessionFrom(ctx)
	msg := postedFrom(ctx)
	ft := g.fast.Load()
	if as == nil || msg == nil || ft == nil || len(msg.id) == 0 || len(msg.params) == 0 {
		return false
	}
	// The edge checked the envelope ("jsonrpc": "2.0", an id that is a
	// string or an integer) and kept the id and params.
	var id any
	if json.Unmarshal(msg.id, &id) != nil || id == nil {
		return false
	}
	var p callParams
	if json.Unmarshal(msg.params, &p) != nil || !(*ft)[p.Name] ||
		p.Meta == nil || p.Meta.ProtocolVersion != version || p.Meta.ClientCapabilities == nil ||
		p.Meta.ProgressToken != nil || p.Task != nil || p.InputResponses != nil || p.RequestState != nil {
		return false
	}
	if mcp.ValidateStandardHeaders(r.Header.Get, version, mcp.MethodToolsCall, msg.params) != nil {
		return false
	}

	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(telemetry.JSONRPCRequestID.String(requestID(id)))
	}
	var req mcp.CallToolRequest
	req.Method = string(mcp.MethodToolsCall)
	req.Params.Name = p.Name
	if len(p.Arguments) > 0 {
		req.Params.RawArguments = p.Arguments
	}
	req.Header = r.Header

	// The request's revision, as mcp-go gives it to handlers: a sampling or
	// elicitation request an upstream sends during the call is refused as
	// it would be there (the revision has no server requests).
	ctx = server.WithRequestProtocolInfo(ctx, &server.RequestProtocolInfo{
		Modern: true, ProtocolVersion: version, ClientCapabilities: p.Meta.ClientCapabilities,
	})
	out := &callStream{w: w}
	ctx = withCallStream(ctx, out)
	res := g.safeCallTool(ctx, req)
	if r, ok := res.(*mcp.CallToolResult); ok && r != nil {
		// What mcp-go stamps on every result of the revision.
		if r.GetResultType() == "" {
			r.SetResultType(mcp.ResultTypeComplete)
		}
		if meta := r.EnsureResultMeta(); meta != nil && meta.ServerInfo() == nil {
			meta.SetServerInfo(g.info)
		}
	}
	out.finish(mcp.NewRequestId(id), res)
	return true
}

// safeCallTool runs the tool call as mcp-go's tool handler chain would:
// with the relay back to the agent, a panic answered as an internal error.
func (g *Gateway) safeCallTool(ctx context.Context, req mcp.CallToolRequest) (res any) {
	defer func() {
		if p := recover(); p != nil {
			g.log.Error("panic in a tool call", "tool", req.Params.Name, "panic", p)
			res = mcp.JSONRPCErrorDetails{Code: mcp.INTERNAL_ERROR,
				Message: fmt.Sprintf("panic recovered in %s tool handler: %v", req.Params.Name, p)}
		}
	}()
	r, err := g.relayMiddleware(g.callTool)(ctx, req)
	if err != nil {
		return mcp.JSONRPCErrorDetails{Code: mcp.INTERNAL_ERROR, Message: err.Error()}
	}
	return r
}

// callStream is the answer to one direct tool call: plain JSON, or, once
// a notification must reach the agent before it, an SSE stream of the
// notifications and then the answer — as mcp-go answers.
type callStream struct {
	mu   sync.Mutex
	w    http.ResponseWriter
	sse  bool // the stream has begun
	done bool // the answer is written; later notifications are dropped
}

type callStreamKey struct{}

func withCallStream(ctx context.Context, s *callStream) context.Context {
	return context.WithValue(ctx, callStreamKey{}, s)
}

func callStreamFrom(ctx context.Context) *callStream {
	s, _ := ctx.Value(callStreamKey{}).(*callStream)
	return s
}

// notify sends a notification to the agent ahead of the answer.
func (s *callStream) notify(method string, params map[string]any) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return server.ErrNotificationNotInitialized
	}
	n := mcp.JSONRPCNotification{JSONRPC: mcp.JSONRPC_VERSION,
		Notification: mcp.Notification{Method: method, Params: mcp.NotificationParams{AdditionalFields: params}}}
	return s.event(n)
}

func (s *callStream) event(v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if !s.sse {
		h := s.w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Connection", "keep-alive")
		h.Set("Cache-Control", "no-cache")
		s.w.WriteHeader(http.StatusOK)
		s.sse = true
	}
	buf := make([]byte, 0, len(data)+24)
	buf = append(buf, "event: message\ndata: "...)
	buf = append(buf, data...)
	buf = append(buf, "\n\n"...)
	if _, err := s.w.Write(buf); err != nil {
		return err
	}
	if f, ok := s.w.(http.Flusher); ok {
		f.Flush()
	}
	return nil
}

// finish writes the answer: res is the tool's result or a JSON-RPC error.
func (s *callStream) finish(id mcp.RequestId, res any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.done = true
	var msg any
	if e, ok := res.(mcp.JSONRPCErrorDetails); ok {
		msg = mcp.JSONRPCError{JSONRPC: mcp.JSONRPC_VERSION, ID: id, Error: e}
	} else {
		msg = mcp.JSONRPCResponse{JSONRPC: mcp.JSONRPC_VERSION, ID: id, Result: res}
	}
	if s.sse {
		_ = s.event(msg)
		return
	}
	data, err := json.Marshal(msg)
	if err != nil {
		data, _ = json.Marshal(mcp.JSONRPCError{JSONRPC: mcp.JSONRPC_VERSION, ID: id,
			Error: mcp.JSONRPCErrorDetails{Code: mcp.INTERNAL_ERROR, Message: "toolgate: encoding the answer: " + err.Error()}})
	}
	s.w.Header().Set("Content-Type", "application/json")
	s.w.WriteHeader(http.StatusOK)
	_, _ = s.w.Write(append(data, '\n'))
}
