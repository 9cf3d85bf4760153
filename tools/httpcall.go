package tools

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// httpSession sends a Streamable HTTP upstream's tools/call requests itself,
// on the session mcp-go's transport opened, instead of through that
// transport's SendRequest, which costs per call a goroutine, two context
// layers, a URL parse, a dozen header writes, a header copy for redirects
// and two JSON encodings of the request (BenchmarkCallHTTP: Call allocated
// 8.2 KB in 115 objects that way, 4.7 KB in 61 this way). This path
// builds the body once and shares the headers that do not change. It sends
// what mcp-go sends (MCP 2025-11-25 basic/transports): the same body, the
// session id and protocol version headers, the configured headers and the
// trace context; and it reads JSON answers and SSE streams (notifications,
// the upstream's requests, resumption) as mcp-go does. Everything else —
// the handshake, the GET stream, listing, pings, cancellation notices and
// the end of the session — stays with mcp-go's transport, which owns the
// session.
type httpSession struct {
	client  *http.Client
	rt      http.RoundTripper // client's; see send
	url     *url.URL
	session string // Mcp-Session-Id mcp-go's transport got at initialize
	// Headers of every POST and of every GET; never written after connect.
	post, get http.Header
	tr        *transport.StreamableHTTP
	serve     transport.RequestHandler // answers the upstream's own requests
}

// newHTTPSession prepares direct requests on the session tr opened with
// the given protocol version; headers are the server's configured ones.
func newHTTPSession(client *http.Client, tr *transport.StreamableHTTP, rawURL, version string, headers map[string]string, serve transport.RequestHandler) (*httpSession, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("invalid URL: %w", err)
	}
	s := &httpSession{client: client, rt: client.Transport, url: u, session: tr.GetSessionId(), tr: tr, serve: serve}
	if s.rt == nil {
		s.rt = http.DefaultTransport
	}
	// The order of mcp-go's sendHTTP: configured headers win over the
	// protocol's, the trace context (added per request) over both.
	build := func(accept string) http.Header {
		h := http.Header{}
		if u.User != nil {
			// What http.Client adds for a URL with credentials, unless
			// configured headers set their own.
			pw, _ := u.User.Password()
			h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(u.User.Username()+":"+pw)))
		}
		h.Set("Content-Type", "application/json")
		h.Set("Accept", accept)
		if s.session != "" && !mcp.IsModernProtocol(version) {
			h.Set(transport.HeaderKeySessionID, s.session)
		}
		if version != "" {
			h.Set(transport.HeaderKeyProtocolVersion, version)
		}
		for k, v := range headers {
			h.Set(k, v)
		}
		return h
	}
	s.post, s.get = build("application/json, text/event-stream"), build("text/event-stream")
	return s, nil
}

// current reports whether the transport still has the session s was made
// on. Once mcp-go's transport saw the session end (a 404), requests go
// through it again, and it refuses them until the connection is remade.
func (s *httpSession) current() bool {
	return s.tr.GetSessionId() == s.session
}

// readBody reads an answer in one allocation when its length is known.
func readBody(resp *http.Response) ([]byte, error) {
	if n := resp.ContentLength; n >= 0 && n <= 1<<20 {
		b := make([]byte, n)
		if _, err := io.ReadFull(resp.Body, b); err != nil {
			return nil, err
		}
		return b, nil
	}
	return io.ReadAll(resp.Body)
}

// newRequest builds a POST (body non-nil) or GET of the session, with the
// call's trace context and extra headers.
func (s *httpSession) newRequest(ctx context.Context, method string, body []byte, extra map[string]string) *http.Request {
	base := s.post
	if method == http.MethodGet {
		base = s.get
	}
	h := base
	if traced := trace.SpanContextFromContext(ctx).IsValid(); traced || len(extra) > 0 {
		h = make(http.Header, len(base)+len(extra)+2)
		for k, v := range extra {
			h.Set(k, v)
		}
		// Values are shared with base: net/http only reads them.
		maps.Copy(h, base)
		if traced {
			// What traceHeaders gives mcp-go's transport, without its map.
			propagation.TraceContext{}.Inject(ctx, propagation.HeaderCarrier(h))
		}
	}
	// Without extra headers the request shares base: a RoundTripper must
	// not modify the request, and net/http only reads it.
	req := http.Request{
		Method:     method,
		URL:        s.url,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     h,
		Host:       s.url.Host,
	}
	if body != nil {
		req.ContentLength = int64(len(body))
		req.Body = &bodyReader{Reader: bytes.NewReader(body)}
		// Lets net/http resend the body on a kept-alive connection that
		// the server had closed, and follow 307/308 redirects.
		req.GetBody = func() (io.ReadCloser, error) { return &bodyReader{Reader: bytes.NewReader(body)}, nil }
	}
	return req.WithContext(ctx)
}

type bodyReader struct{ *bytes.Reader }

func (bodyReader) Close() error { return nil }

// send makes one request. It goes to the client's RoundTripper, skipping
// http.Client's copy of the headers for redirects; a redirect, which MCP
// endpoints rarely answer, is sent again through the client to be
// followed as mcp-go's transport follows it.
func (s *httpSession) send(ctx context.Context, method string, body []byte, extra map[string]string) (*http.Response, error) {
	resp, err := s.rt.RoundTrip(s.newRequest(ctx, method, body, extra))
	if err != nil {
		return nil, &url.Error{Op: method[:1] + strings.ToLower(method[1:]), URL: s.url.Redacted(), Err: err}
	}
	switch resp.StatusCode {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		resp.Body.Close()
		return s.client.Do(s.newRequest(ctx, method, body, extra))
	}
	return resp, nil
}

// errNoResponse is a stream that ended or broke off before the answer.
var errNoResponse = errors.New("unexpected nil response")

// roundTrip sends one JSON-RPC request body and returns the answer, or an
// error worded as mcp-go's transport words it.
func (s *httpSession) roundTrip(ctx context.Context, m *Manager, c *conn, body []byte) (*transport.JSONRPCResponse, error) {
	resp, err := s.send(ctx, http.MethodPost, body, nil)
	if err != nil {
		return nil, fmt.Errorf("failed to send request: failed to send request: %w", err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		// The upstream forgot the session. A ping through mcp-go's
		// transport (Manager.suspect) ends it there and reconnects.
		return nil, fmt.Errorf("failed to send request: %w", transport.ErrSessionTerminated)
	case resp.StatusCode == http.StatusUnauthorized:
		return nil, &transport.AuthorizationRequiredError{}
	case resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted:
		b, _ := io.ReadAll(resp.Body)
		var r transport.JSONRPCResponse
		if json.Unmarshal(b, &r) == nil {
			return &r, nil
		}
		return nil, fmt.Errorf("request failed with status %d: %s", resp.StatusCode, b)
	}
	ct := resp.Header.Get("Content-Type")
	mediaType := ct
	if ct != "application/json" && ct != "text/event-stream" {
		mediaType, _, _ = mime.ParseMediaType(ct)
	}
	switch mediaType {
	case "application/json":
		b, err := readBody(resp)
		if err != nil {
			return nil, fmt.Errorf("failed to decode response: %w", err)
		}
		r, err := decodeResponse(b)
		if err != nil {
			return nil, fmt.Errorf("failed to decode response: %w", err)
		}
		return r, nil
	case "text/event-stream":
		return s.readStream(ctx, m, c, resp.Body)
	}
	return nil, fmt.Errorf("unexpected content type: %s", ct)
}

// decodeResponse reads a JSON-RPC answer; an answer without an id is an
// error, as in mcp-go. The result aliases b.
func decodeResponse(b []byte) (*transport.JSONRPCResponse, error) {
	var env struct {
		ID     rawAlias                 `json:"id"`
		Result rawAlias                 `json:"result"`
		Error  *mcp.JSONRPCErrorDetails `json:"error"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		return nil, err
	}
	if len(env.ID) == 0 || string(env.ID) == "null" {
		return nil, fmt.Errorf("response should contain RPC id: %s", b)
	}
	// The id is not read back: mcp-go's transport does not check it either,
	// and one request goes per HTTP request.
	return &transport.JSONRPCResponse{JSONRPC: mcp.JSONRPC_VERSION, Result: json.RawMessage(env.Result), Error: env.Error}, nil
}

// rawAlias is json.RawMessage without the copy: it keeps the slice of the
// input encoding/json passes to UnmarshalJSON, valid while the input is.
type rawAlias []byte

func (r *rawAlias) UnmarshalJSON(b []byte) error {
	*r = b
	return nil
}

// SSE resumption delays, as in mcp-go's transport (SEP-1699).
const (
	defaultSSEReconnectDelay = time.Second
	minSSEReconnectDelay     = 10 * time.Millisecond
)

// readStream reads an SSE answer stream until the answer: notifications go
// to the Manager, the upstream's requests to s.serve, each answered by a
// POST of its own; a stream the server ends early, after an event id, is
// resumed with a GET carrying Last-Event-ID.
func (s *httpSession) readStream(ctx context.Context, m *Manager, c *conn, body io.Reader) (*transport.JSONRPCResponse, error) {
	var (
		lastID   string
		retry    time.Duration
		hasRetry bool
	)
	for {
		res, ended, err := s.readEvents(ctx, m, c, body, &lastID, &retry, &hasRetry)
		if res != nil || err != nil {
			return res, err
		}
		if !ended || lastID == "" {
			return nil, errNoResponse
		}
		delay := defaultSSEReconnectDelay
		if hasRetry {
			delay = max(retry, minSSEReconnectDelay)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		next, err := s.resume(ctx, lastID)
		if err != nil {
			return nil, fmt.Errorf("failed to resume the SSE stream for the response: %w", err)
		}
		defer next.Close()
		body = next
	}
}

// resume reopens a call's answer stream after the event lastID.
func (s *httpSession) resume(ctx context.Context, lastID string) (io.ReadCloser, error) {
	resp, err := s.send(ctx, http.MethodGet, nil, map[string]string{"Last-Event-ID": lastID})
	if err != nil {
		return nil, err
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	switch {
	case resp.StatusCode == http.StatusNotFound:
		err = transport.ErrSessionTerminated
	case resp.StatusCode != http.StatusOK:
		err = fmt.Errorf("unexpected status %d", resp.StatusCode)
	case mt != "text/event-stream":
		err = fmt.Errorf("unexpected content type %q", resp.Header.Get("Content-Type"))
	}
	if err != nil {
		resp.Body.Close()
		return nil, err
	}
	return resp.Body, nil
}

// readEvents reads one SSE stream. It returns the answer when it came, or
// whether the server ended the stream (as opposed to it breaking off).
func (s *httpSession) readEvents(ctx context.Context, m *Manager, c *conn, body io.Reader, lastID *string, retry *time.Duration, hasRetry *bool) (*transport.JSONRPCResponse, bool, error) {
	br := bufio.NewReader(body)
	var data, id string
	var hasID bool
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			if ctx.Err() != nil {
				return nil, false, ctx.Err()
			}
			if err == io.EOF {
				// An unfinished event still counts; its id does not.
				if data != "" {
					if res := s.dispatch(ctx, m, c, data); res != nil {
						return res, true, nil
					}
				}
				return nil, true, nil
			}
			m.log.Error("SSE stream error", "err", err)
			return nil, false, nil
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			if hasID {
				*lastID = id
			}
			hasID = false
			if data != "" {
				if res := s.dispatch(ctx, m, c, data); res != nil {
					return res, true, nil
				}
			}
			data = ""
			continue
		}
		// Every event type carries JSON-RPC messages: "event:" lines are
		// not read, as in mcp-go.
		if v, ok := strings.CutPrefix(line, "data:"); ok {
			v = strings.TrimPrefix(v, " ")
			if data != "" {
				data += "\n" + v
			} else {
				data = v
			}
		} else if v, ok := strings.CutPrefix(line, "id:"); ok {
			// The SSE spec ignores an id that contains a NUL character.
			if v = strings.TrimPrefix(v, " "); !strings.ContainsRune(v, 0) {
				id, hasID = v, true
			}
		} else if v, ok := strings.CutPrefix(line, "retry:"); ok {
			v = strings.TrimPrefix(v, " ")
			if ms, err := strconv.ParseUint(v, 10, 31); err == nil && v != "" && strings.Trim(v, "0123456789") == "" {
				*retry, *hasRetry = time.Duration(ms)*time.Millisecond, true
			}
		}
	}
}

// dispatch handles one SSE message: the answer is returned; a notification
// or a request of the upstream's is handled and nil returned.
func (s *httpSession) dispatch(ctx context.Context, m *Manager, c *conn, data string) *transport.JSONRPCResponse {
	var msg struct {
		ID     json.RawMessage          `json:"id"`
		Method json.RawMessage          `json:"method"`
		Result json.RawMessage          `json:"result"`
		Error  *mcp.JSONRPCErrorDetails `json:"error"`
	}
	if err := json.Unmarshal([]byte(data), &msg); err != nil {
		m.log.Info("failed to unmarshal message (non-fatal)", "err", err, "message_len", len(data))
		return nil
	}
	if len(msg.ID) == 0 || string(msg.ID) == "null" {
		var n mcp.JSONRPCNotification
		if err := json.Unmarshal([]byte(data), &n); err != nil {
			m.log.Error("failed to unmarshal notification", "err", err)
			return nil
		}
		m.onNotification(c, n)
		return nil
	}
	var id mcp.RequestId
	if err := id.UnmarshalJSON(msg.ID); err != nil {
		m.log.Info("failed to unmarshal message (non-fatal)", "err", err, "message_len", len(data))
		return nil
	}
	if msg.Method != nil { // present, whatever its value, as mcp-go checks
		var req transport.JSONRPCRequest
		if err := json.Unmarshal([]byte(data), &req); err == nil {
			go s.answer(ctx, m, req)
			return nil
		}
	}
	return &transport.JSONRPCResponse{JSONRPC: mcp.JSONRPC_VERSION, ID: id, Result: msg.Result, Error: msg.Error}
}

// answer serves a request the upstream sent on a call's stream and posts
// the answer back, as mcp-go's transport does: under the call's context,
// for at most 30 seconds.
func (s *httpSession) answer(ctx context.Context, m *Manager, req transport.JSONRPCRequest) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := s.serveSafely(ctx, req)
	if err != nil {
		resp = transport.NewJSONRPCErrorResponse(req.ID, mcp.INTERNAL_ERROR, err.Error(), nil)
	}
	if resp == nil {
		return
	}
	body, err := json.Marshal(resp)
	if err != nil {
		m.log.Error("failed to marshal response", "err", err)
		return
	}
	r, err := s.send(ctx, http.MethodPost, body, nil)
	if err != nil {
		m.log.Error("failed to send response to server", "err", err)
		return
	}
	defer r.Body.Close()
	if r.StatusCode != http.StatusOK && r.StatusCode != http.StatusAccepted {
		b, _ := io.ReadAll(r.Body)
		m.log.Error("server rejected response", "status", r.StatusCode, "body_len", len(b))
	}
}

// appendCallBody appends a tools/call request: the arguments as the agent
// sent them (compacted, which also checks that they are JSON), meta as
// encoding/json would write it.
func appendCallBody(b []byte, seq uint64, name string, args json.RawMessage, meta map[string]any) ([]byte, error) {
	b = append(b, `{"jsonrpc":"2.0","id":"toolgate-`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, '"')
	b = append(b, `,"method":"tools/call","params":{"name":`...)
	b = appendJSONString(b, name)
	if len(args) > 0 {
		b = append(b, `,"arguments":`...)
		buf := bytes.NewBuffer(b)
		if err := json.Compact(buf, args); err != nil {
			return nil, fmt.Errorf("arguments: %w", err)
		}
		b = buf.Bytes()
	}
	if len(meta) > 0 {
		b = append(b, `,"_meta":`...)
		var err error
		if b, err = appendMeta(b, meta); err != nil {
			return nil, fmt.Errorf("_meta: %w", err)
		}
	}
	return append(b, "}}"...), nil
}

// appendMeta writes a small map with sorted keys, as encoding/json does,
// without its reflection for the value types toolgate puts there.
func appendMeta(b []byte, meta map[string]any) ([]byte, error) {
	var keyBuf [8]string
	keys := keyBuf[:0]
	for k := range meta {
		keys = append(keys, k)
	}
	// Insertion sort: a handful of keys, and no allocation.
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, k)
		b = append(b, ':')
		switch v := meta[k].(type) {
		case string:
			b = appendJSONString(b, v)
		case int:
			b = strconv.AppendInt(b, int64(v), 10)
		case int64:
			b = strconv.AppendInt(b, v, 10)
		case uint64:
			b = strconv.AppendUint(b, v, 10)
		case bool:
			b = strconv.AppendBool(b, v)
		default:
			enc, err := json.Marshal(v)
			if err != nil {
				return nil, err
			}
			b = append(b, enc...)
		}
	}
	return append(b, '}'), nil
}

// appendJSONString writes s as encoding/json would; plain ASCII, which
// names, ids and keys are, is copied as is.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			enc, _ := json.Marshal(s) // a string always encodes
			return append(b, enc...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// callHTTP is rpc for a tools/call on s: same errors, same cancellation
// notice, same relaying of the upstream's requests to the agent.
func (m *Manager) callHTTP(ctx context.Context, c *conn, s *httpSession, name string, args json.RawMessage, meta map[string]any) (json.RawMessage, error) {
	const method = string(mcp.MethodToolsCall)
	// String ids never collide with the integer ids mcp-go's client uses on
	// the same session.
	seq := m.reqSeq.Add(1)
	body, err := appendCallBody(make([]byte, 0, 128+len(name)+len(args)+48*len(meta)), seq, name, args, meta)
	if err != nil {
		return nil, fmt.Errorf("%s: failed to marshal request: %w", method, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if r := relayFrom(ctx); r != nil {
		defer c.relays.remove(c.relays.add(r))
	}
	resp, err := s.roundTrip(ctx, m, c, body)
	if err != nil {
		switch {
		case c.ctx.Err() != nil:
			// Manager.Close, or the watcher gave the connection up: in-flight
			// calls end with it, as they do on mcp-go's transport.
			return nil, fmt.Errorf("%s: connection closed", method)
		case ctx.Err() != nil:
			m.sendCancelled(c, mcp.NewRequestId("toolgate-"+strconv.FormatUint(seq, 10)), ctx.Err())
			return nil, fmt.Errorf("%s: %w", method, ctx.Err())
		}
		return nil, fmt.Errorf("%s: %w", method, err)
	}
	if resp.Error != nil {
		return nil, &rpcError{Code: resp.Error.Code, Message: resp.Error.Message}
	}
	return resp.Result, nil
}

// serveSafely turns a panic of the request handler into an error answer,
// as mcp-go's transport does, rather than ending the process.
func (s *httpSession) serveSafely(ctx context.Context, req transport.JSONRPCRequest) (resp *transport.JSONRPCResponse, err error) {
	defer func() {
		if r := recover(); r != nil {
			resp, err = nil, fmt.Errorf("internal error: panic in request handler: %v", r)
		}
	}()
	return s.serve(ctx, req)
}
