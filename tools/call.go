package tools

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"

	"github.com/mark3labs/mcp-go/mcp"
)

// CallError kinds.
const (
	KindUnknownTool   = "unknown_tool"
	KindUnavailable   = "unavailable"
	KindTimeout       = "timeout"
	KindCanceled      = "canceled"
	KindUpstreamError = "upstream_error"
	KindProtocol      = "protocol"
)

// CallError is a tools/call that did not produce a result. A result with
// isError: true is not a CallError: it is the tool's own answer.
type CallError struct {
	Server, Tool string // Tool is the upstream's own name; for an unknown tool, the name asked for
	Kind         string // one of the Kind constants
	Code         int    // JSON-RPC error code, for KindUpstreamError
	Err          error
}

func (e *CallError) Error() string {
	var b strings.Builder
	if e.Server != "" {
		fmt.Fprintf(&b, "upstream %q ", e.Server)
	}
	fmt.Fprintf(&b, "tool %q: ", e.Tool)
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	} else {
		b.WriteString(strings.ReplaceAll(e.Kind, "_", " "))
	}
	return b.String()
}

func (e *CallError) Unwrap() error { return e.Err }

// CallOptions carries what an agent's tools/call brings besides arguments.
type CallOptions struct {
	// ProgressToken is the agent's progress token, nil if it gave none.
	ProgressToken mcp.ProgressToken
	// OnProgress is called for each progress notification the upstream sends
	// for this call, with the agent's token put back. It runs on the
	// connection's reader, so it must return quickly. Nil, or a nil
	// ProgressToken, asks the upstream for no progress.
	OnProgress func(mcp.ProgressNotificationParams)
	// Meta is extra _meta sent upstream (trace context, for example).
	Meta map[string]any
}

type progressRoute struct {
	token      mcp.ProgressToken
	onProgress func(mcp.ProgressNotificationParams)
}

// callParams is tools/call's params with the arguments kept as raw bytes, so
// large integers and any text reach the upstream as the agent sent them.
type callParams struct {
	Name      string          `json:"name"`
	Arguments json.RawMessage `json:"arguments,omitempty"`
	Meta      map[string]any  `json:"_meta,omitempty"`
}

// Call forwards a tools/call to the upstream that offers the tool, with the
// server's deadline. Progress comes back through opts.OnProgress;
// cancelling ctx cancels the upstream call. The error is always a *CallError.
func (m *Manager) Call(ctx context.Context, name string, args json.RawMessage, opts CallOptions) (*mcp.CallToolResult, error) {
	m.mu.RLock()
	t, ok := m.cat.byName[name]
	var u *upstream
	var c *conn
	if ok {
		u = m.byName[t.Server]
		c = u.conn
	}
	m.mu.RUnlock()
	if !ok {
		return nil, &CallError{Tool: name, Kind: KindUnknownTool, Err: errors.New("unknown tool")}
	}
	fail := func(kind string, err error) (*mcp.CallToolResult, error) {
		return nil, &CallError{Server: t.Server, Tool: t.Upstream, Kind: kind, Err: err}
	}
	if c == nil {
		return fail(KindUnavailable, errors.New("unavailable: server is not connected"))
	}

	// opts.Meta is only read (encoded before rpc returns); it is copied
	// before a progress token is added.
	params := callParams{Name: t.Upstream, Arguments: args, Meta: opts.Meta}
	if opts.ProgressToken != nil && opts.OnProgress != nil {
		// The upstream gets a token of ours, unique across agents, and the
		// agent's token is put back on the way out.
		token := fmt.Sprintf("toolgate-progress-%d", m.reqSeq.Add(1))
		params.Meta = maps.Clone(opts.Meta)
		if params.Meta == nil {
			params.Meta = map[string]any{}
		}
		params.Meta["progressToken"] = token
		m.progressMu.Lock()
		m.progress[token] = &progressRoute{token: opts.ProgressToken, onProgress: opts.OnProgress}
		m.progressMu.Unlock()
		defer func() {
			m.progressMu.Lock()
			delete(m.progress, token)
			m.progressMu.Unlock()
		}()
	}

	callCtx, cancel := context.WithTimeout(ctx, u.cfg.Timeout)
	defer cancel()
	var raw json.RawMessage
	var err error
	if h := c.http; h != nil && h.current() {
		// The call ends with its connection, as calls through mcp-go's
		// transport do.
		defer context.AfterFunc(c.ctx, cancel)()
		raw, err = m.callHTTP(callCtx, c, h, t.Upstream, args, params.Meta)
	} else {
		raw, err = m.rpc(callCtx, c, string(mcp.MethodToolsCall), params)
	}
	if err != nil {
		var rerr *rpcError
		switch {
		case errors.As(err, &rerr):
			return nil, &CallError{Server: t.Server, Tool: t.Upstream, Kind: KindUpstreamError, Code: rerr.Code,
				Err: fmt.Errorf("upstream error %d: %s", rerr.Code, rerr.Message)}
		case errors.Is(ctx.Err(), context.Canceled):
			return fail(KindCanceled, fmt.Errorf("canceled: %w", ctx.Err()))
		case ctx.Err() != nil:
			return fail(KindTimeout, fmt.Errorf("timeout: caller's deadline passed: %w", ctx.Err()))
		case errors.Is(callCtx.Err(), context.DeadlineExceeded):
			return fail(KindTimeout, fmt.Errorf("timeout after %v: %w", u.cfg.Timeout, callCtx.Err()))
		}
		m.suspect(c, err)
		return fail(KindUnavailable, fmt.Errorf("unavailable: %w", err))
	}
	res, err := parseCallToolResult(raw)
	if err != nil {
		return fail(KindProtocol, fmt.Errorf("protocol error: %w", err))
	}
	if res.ResultType == mcp.ResultTypeInputRequired {
		return fail(KindProtocol, errors.New("protocol error: upstream asked for more input (multi round-trip), which toolgate does not relay"))
	}
	clearServerMeta(&res.Result)
	return res, nil
}

// parseCallToolResult is mcp.ParseCallToolResult in one pass over the
// JSON, and one more per content item, instead of three and two: an
// answer is parsed on every call. The server's _meta, which Call clears
// (clearServerMeta), is checked to be an object but not decoded.
// TestParseCallToolResult holds it to mcp-go's function.
func parseCallToolResult(raw json.RawMessage) (*mcp.CallToolResult, error) {
	if raw == nil {
		return nil, errors.New("response is nil")
	}
	// The fields of mcp.CallToolResult.UnmarshalJSON.
	var r struct {
		Meta              rawAlias          `json:"_meta"`
		ResultType        mcp.ResultType    `json:"resultType"`
		Content           []rawAlias        `json:"content"`
		StructuredContent json.RawMessage   `json:"structuredContent"`
		IsError           bool              `json:"isError"`
		InputRequests     mcp.InputRequests `json:"inputRequests"`
		RequestState      string            `json:"requestState"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("failed to unmarshal response: %w", err)
	}
	// A result asking for more input (SEP-2322) carries only the input
	// requests and the request state, so it legitimately has no content.
	// A content of null passes, as in mcp-go, and means none.
	if r.Content == nil && r.ResultType != mcp.ResultTypeInputRequired {
		var probe struct {
			Content json.RawMessage `json:"content"`
		}
		if json.Unmarshal(raw, &probe) != nil || probe.Content == nil {
			return nil, errors.New("content is missing")
		}
	}
	if len(r.Meta) > 0 && r.Meta[0] != '{' && string(r.Meta) != "null" {
		return nil, errors.New("failed to unmarshal response: _meta is not an object")
	}
	res := &mcp.CallToolResult{IsError: r.IsError}
	res.InputRequests, res.RequestState = r.InputRequests, r.RequestState
	res.ResultType = r.ResultType
	if len(r.Content) > 0 {
		res.Content = make([]mcp.Content, len(r.Content))
		for i, item := range r.Content {
			c, err := unmarshalContent(item)
			if err != nil {
				return nil, fmt.Errorf("failed to unmarshal response: %w", err)
			}
			res.Content[i] = c
		}
	}
	if len(r.StructuredContent) > 0 {
		res.RawStructuredContent = r.StructuredContent
		if err := json.Unmarshal(r.StructuredContent, &res.StructuredContent); err != nil {
			return nil, fmt.Errorf("failed to unmarshal response: %w", err)
		}
	}
	return res, nil
}

// unmarshalContent is mcp.UnmarshalContent, which decodes every item
// twice (its type, then the item), with text, the usual kind, decoded once.
func unmarshalContent(b []byte) (mcp.Content, error) {
	var tc mcp.TextContent
	if json.Unmarshal(b, &tc) == nil && tc.Type == mcp.ContentTypeText {
		return tc, nil
	}
	return mcp.UnmarshalContent(b)
}

// routeProgress hands an upstream progress notification to the call it
// belongs to, with the agent's token put back; others are dropped.
func (m *Manager) routeProgress(n mcp.JSONRPCNotification) {
	token, ok := n.Params.AdditionalFields["progressToken"].(string)
	if !ok {
		return
	}
	m.progressMu.Lock()
	r := m.progress[token]
	m.progressMu.Unlock()
	if r == nil {
		return
	}
	p := mcp.ProgressNotificationParams{ProgressToken: r.token}
	p.Progress, _ = number(n.Params.AdditionalFields["progress"])
	p.Total, _ = number(n.Params.AdditionalFields["total"])
	p.Message, _ = n.Params.AdditionalFields["message"].(string)
	r.onProgress(p)
}

func number(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case json.Number:
		f, err := x.Float64()
		return f, err == nil
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	}
	return 0, false
}
