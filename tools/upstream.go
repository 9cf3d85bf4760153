package tools

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/toolgate/toolgate/tools/demo"
)

// upstream is one configured server. Fields below cfg are guarded by Manager.mu.
type upstream struct {
	cfg ServerConfig

	state      string
	lastErr    string
	since      time.Time
	reconnects int
	everReady  bool
	conn       *conn    // nil unless ready
	listing    *listing // what it offered when last listed; nil unless ready
	builtin    *demo.Server

	// http carries the requests of an HTTP upstream (streamable-http, sse)
	// across its reconnections; nil for the others. Set once by New.
	http *http.Client
}

// Idle connections an HTTP upstream keeps. net/http's default transport
// keeps 2 per host, so with more calls in flight most connections would be
// closed after one answer and dialled again for the next call.
const (
	maxIdleConnsPerUpstream = 256
	idleConnTimeout         = 90 * time.Second
)

// newHTTPClient is one HTTP upstream's own connection pool, sized for the
// gateway's concurrency. It keeps the default transport's proxy, dial,
// TLS and HTTP/2 settings, and sets no overall timeout: the Streamable
// HTTP GET stream and the SSE stream stay open; calls carry their
// deadline in their context.
func newHTTPClient() *http.Client {
	var tr *http.Transport
	if dt, ok := http.DefaultTransport.(*http.Transport); ok {
		tr = dt.Clone()
	} else {
		tr = &http.Transport{Proxy: http.ProxyFromEnvironment, ForceAttemptHTTP2: true}
	}
	tr.MaxIdleConns = maxIdleConnsPerUpstream
	tr.MaxIdleConnsPerHost = maxIdleConnsPerUpstream
	tr.IdleConnTimeout = idleConnTimeout
	return &http.Client{Transport: tr}
}

// conn is one live connection to an upstream.
type conn struct {
	client    *client.Client
	transport transport.Interface

	lostOnce sync.Once
	lost     chan struct{} // closed when the transport reports the connection gone
	lostErr  error
	check    chan struct{} // a call failed at the transport: ping now
	relist   chan struct{} // the upstream said a list changed
	relays   relaySet      // agents whose requests are in flight on this connection

	// ctx ends when the connection is closed.
	ctx    context.Context
	cancel context.CancelFunc
	// http sends tools/call requests of a Streamable HTTP upstream
	// (httpcall.go); nil for other transports.
	http *httpSession
}

func newConn(parent context.Context) *conn {
	c := &conn{lost: make(chan struct{}), check: make(chan struct{}, 1), relist: make(chan struct{}, 1)}
	c.ctx, c.cancel = context.WithCancel(parent)
	return c
}

// close ends the connection and the requests in flight on it.
func (c *conn) close() {
	c.cancel()
	_ = c.client.Close()
}

func (c *conn) markLost(err error) {
	c.lostOnce.Do(func() {
		c.lostErr = err
		close(c.lost)
	})
}

func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// run keeps one upstream connected until Close. initialDone is called once,
// when the server is first ready or has used up Options.ConnectAttempts.
func (m *Manager) run(u *upstream, initialDone func()) {
	var once sync.Once
	reportInitial := func() { once.Do(initialDone) }
	defer reportInitial()
	if u.http != nil {
		defer u.http.CloseIdleConnections()
	}

	backoff := m.opts.InitialBackoff
	attempts := 0
	for {
		c, l, err := m.connect(u)
		if err == nil {
			m.setReady(u, c, l)
			reportInitial()
			attempts, backoff = 0, m.opts.InitialBackoff
			err = m.watch(u, c)
			c.close()
			if u.http != nil {
				// Connections to an upstream that was lost may be dead too.
				u.http.CloseIdleConnections()
			}
			if m.ctx.Err() != nil {
				return
			}
			m.setDown(u, fmt.Errorf("connection lost: %w", err))
			continue
		}
		if m.ctx.Err() != nil {
			return
		}
		attempts++
		m.setFailed(u, err, attempts >= m.opts.ConnectAttempts)
		if attempts >= m.opts.ConnectAttempts {
			reportInitial()
		}
		m.log.Warn("upstream connect failed", "server", u.cfg.Name, "attempt", attempts, "retry_in", backoff, "err", err)
		t := time.NewTimer(backoff)
		select {
		case <-m.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(backoff*2, m.opts.MaxBackoff)
	}
}

func (m *Manager) setReady(u *upstream, c *conn, l *listing) {
	m.mu.Lock()
	if u.everReady {
		u.reconnects++
	}
	u.everReady = true
	u.state, u.lastErr, u.since = StateReady, "", time.Now()
	u.conn, u.listing = c, l
	changed := m.rebuildLocked()
	m.mu.Unlock()
	m.log.Info("upstream ready", "server", u.cfg.Name, "tools", len(l.tools), "resources", len(l.resources), "prompts", len(l.prompts))
	if changed {
		m.changed()
	}
}

func (m *Manager) setDown(u *upstream, err error) {
	m.mu.Lock()
	u.state, u.lastErr, u.since = StateDown, err.Error(), time.Now()
	u.conn, u.listing = nil, nil
	changed := m.rebuildLocked()
	m.mu.Unlock()
	m.log.Warn("upstream down", "server", u.cfg.Name, "err", err)
	if changed {
		m.changed()
	}
}

func (m *Manager) setFailed(u *upstream, err error, exhausted bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	u.lastErr = err.Error()
	if u.state == StateConnecting && exhausted || u.everReady {
		if u.state != StateDown {
			u.since = time.Now()
		}
		u.state = StateDown
	}
}

// setListing replaces what a ready upstream offers after it said a list changed.
func (m *Manager) setListing(u *upstream, c *conn, l *listing) {
	m.mu.Lock()
	if u.conn != c {
		m.mu.Unlock()
		return
	}
	u.listing = l
	changed := m.rebuildLocked()
	m.mu.Unlock()
	if changed {
		m.log.Info("upstream catalog changed", "server", u.cfg.Name, "tools", len(l.tools))
		m.changed()
	}
}

// connectTimeout bounds the handshake and initial listing of one attempt.
func (u *upstream) connectTimeout() time.Duration {
	return min(u.cfg.Timeout, 30*time.Second)
}

// connect makes one connection attempt: transport, handshake, listing.
func (m *Manager) connect(u *upstream) (*conn, *listing, error) {
	tr, err := m.newTransport(u)
	if err != nil {
		return nil, nil, err
	}
	c := newConn(m.ctx)
	c.transport = tr
	// The handshake is pinned to the last protocol revision with one: it keeps
	// server-to-client notifications (list_changed, progress) and ping working
	// the same way on every transport, and every mcp-go server still speaks it.
	c.client = client.NewClient(tr, client.WithProtocolVersion(mcp.LATEST_LEGACY_PROTOCOL_VERSION))
	c.client.OnNotification(func(n mcp.JSONRPCNotification) { m.onNotification(c, n) })
	c.client.OnConnectionLost(func(err error) { c.markLost(err) })
	// The transport lives as long as the Manager: for stdio the child process
	// is bound to this context.
	if err := c.client.Start(m.ctx); err != nil {
		c.close()
		return nil, nil, fmt.Errorf("start %s transport: %w", u.cfg.Transport, err)
	}
	// Sampling and elicitation requests go to the agent being served
	// (relay.go), not to mcp-go's client handlers.
	serve := m.serveUpstreamRequest(u.cfg.Name, c)
	if bidi, ok := tr.(transport.BidirectionalInterface); ok {
		bidi.SetRequestHandler(serve)
	}
	ctx, cancel := context.WithTimeout(m.ctx, u.connectTimeout())
	defer cancel()
	req := mcp.InitializeRequest{}
	req.Params.ProtocolVersion = mcp.LATEST_LEGACY_PROTOCOL_VERSION
	req.Params.ClientInfo = mcp.Implementation{Name: "toolgate", Version: "0.1.0"}
	req.Params.Capabilities = upstreamCapabilities()
	hello, err := c.client.Initialize(ctx, req)
	if err != nil {
		c.close()
		return nil, nil, fmt.Errorf("initialize: %w", err)
	}
	if st, ok := tr.(*transport.StreamableHTTP); ok {
		headers, err := m.headers(u.cfg)
		if err == nil {
			c.http, err = newHTTPSession(u.http, st, u.cfg.URL, hello.ProtocolVersion, headers, serve)
		}
		if err != nil {
			c.close()
			return nil, nil, err
		}
	}
	l, err := m.list(ctx, u, c)
	if err != nil {
		c.close()
		return nil, nil, err
	}
	return c, l, nil
}

func (m *Manager) newTransport(u *upstream) (transport.Interface, error) {
	cfg := u.cfg
	switch cfg.Transport {
	case TransportBuiltin:
		m.mu.Lock()
		defer m.mu.Unlock()
		if u.builtin == nil {
			srv, err := demo.New(demo.Options{Sandbox: cfg.Sandbox, Logger: m.log.With("server", cfg.Name)})
			if err != nil {
				return nil, fmt.Errorf("start builtin %q: %w", cfg.Builtin, err)
			}
			u.builtin = srv
		}
		return transport.NewInProcessTransport(u.builtin.MCPServer()), nil
	case TransportStdio:
		env, err := m.childEnv(cfg)
		if err != nil {
			return nil, err
		}
		return transport.NewStdioWithOptions(cfg.Command, nil, cfg.Args,
			transport.WithCommandLogger(m.log.With("server", cfg.Name)),
			transport.WithCommandFunc(func(ctx context.Context, command string, _ []string, args []string) (*exec.Cmd, error) {
				cmd := exec.CommandContext(ctx, command, args...)
				// The child gets a minimal environment plus what config names, not
				// toolgate's own, which holds the secrets of every other upstream.
				cmd.Env = env
				cmd.Dir = cfg.Dir
				return cmd, nil
			})), nil
	case TransportStreamableHTTP, TransportSSE:
		headers, err := m.headers(cfg)
		if err != nil {
			return nil, err
		}
		if cfg.Transport == TransportSSE {
			return transport.NewSSE(cfg.URL, transport.WithHTTPClient(u.http), transport.WithHeaders(headers), transport.WithHeaderFunc(traceHeaders),
				transport.WithSSELogger(m.log.With("server", cfg.Name)))
		}
		return transport.NewStreamableHTTP(cfg.URL, transport.WithHTTPBasicClient(u.http),
			transport.WithHTTPHeaders(headers), transport.WithHTTPHeaderFunc(traceHeaders),
			// The GET stream carries list_changed notifications.
			transport.WithContinuousListening(),
			transport.WithHTTPLogger(m.log.With("server", cfg.Name)))
	}
	return nil, fmt.Errorf("unknown transport %q", cfg.Transport)
}

// traceHeaders carries the call's trace context to an HTTP upstream as
// W3C traceparent/tracestate headers (it goes in _meta too, see Call).
func traceHeaders(ctx context.Context) map[string]string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return nil // nothing to carry: spare the map
	}
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, carrier)
	return carrier
}

// baseEnv lists the variables of toolgate's environment a stdio child inherits.
var baseEnv = []string{"PATH", "HOME", "USER", "LANG", "LC_ALL", "TMPDIR", "TZ", "SYSTEMROOT"}

func (m *Manager) lookupEnv(name string) (string, bool) {
	if m.opts.LookupEnv != nil {
		return m.opts.LookupEnv(name)
	}
	return os.LookupEnv(name)
}

func (m *Manager) childEnv(cfg ServerConfig) ([]string, error) {
	vars := map[string]string{}
	for _, k := range baseEnv {
		if v, ok := os.LookupEnv(k); ok {
			vars[k] = v
		}
	}
	for k, v := range cfg.Env {
		vars[k] = v
	}
	for k, from := range cfg.EnvFrom {
		v, ok := m.lookupEnv(from)
		if !ok {
			return nil, fmt.Errorf("env_from %s: environment variable %s is not set", k, from)
		}
		vars[k] = v
	}
	env := make([]string, 0, len(vars))
	for k, v := range vars {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	return env, nil
}

func (m *Manager) headers(cfg ServerConfig) (map[string]string, error) {
	h := map[string]string{}
	for k, v := range cfg.Headers {
		h[k] = v
	}
	for k, from := range cfg.HeadersFromEnv {
		v, ok := m.lookupEnv(from)
		if !ok {
			return nil, fmt.Errorf("headers_from_env %s: environment variable %s is not set", k, from)
		}
		h[k] = v
	}
	return h, nil
}

// watch returns when the connection is lost, a health check fails, or the
// Manager closes (then nil). It also re-lists when the upstream asks.
func (m *Manager) watch(u *upstream, c *conn) error {
	tick := time.NewTicker(m.opts.HealthInterval)
	defer tick.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return nil
		case <-c.lost:
			if c.lostErr == nil {
				return errors.New("transport closed")
			}
			return c.lostErr
		case <-tick.C:
			if err := m.ping(u, c); err != nil {
				return err
			}
		case <-c.check:
			if err := m.ping(u, c); err != nil {
				return err
			}
		case <-c.relist:
			ctx, cancel := context.WithTimeout(m.ctx, u.connectTimeout())
			l, err := m.list(ctx, u, c)
			cancel()
			if err != nil {
				m.log.Warn("upstream re-list failed", "server", u.cfg.Name, "err", err)
				if perr := m.ping(u, c); perr != nil {
					return perr
				}
				continue
			}
			m.setListing(u, c, l)
		}
	}
}

func (m *Manager) ping(u *upstream, c *conn) error {
	ctx, cancel := context.WithTimeout(m.ctx, min(u.cfg.Timeout, 5*time.Second, max(m.opts.HealthInterval, time.Second)))
	defer cancel()
	if _, err := m.rpc(ctx, c, string(mcp.MethodPing), nil); err != nil {
		if m.ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("health check: %w", err)
	}
	return nil
}

// suspect asks the watcher to check the connection after a request failed at
// the transport, so a dead upstream is noticed before the next health tick.
func (m *Manager) suspect(c *conn, err error) {
	var rerr *rpcError
	if err == nil || errors.As(err, &rerr) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return
	}
	poke(c.check)
}

// onNotification handles what an upstream sends unasked. For stdio it runs on
// the transport's reader, so it must not send requests itself.
func (m *Manager) onNotification(c *conn, n mcp.JSONRPCNotification) {
	switch mcp.MCPMethod(n.Method) {
	case mcp.MethodNotificationProgress:
		m.routeProgress(n)
	case mcp.MethodNotificationToolsListChanged,
		mcp.MethodNotificationResourcesListChanged,
		mcp.MethodNotificationPromptsListChanged:
		poke(c.relist)
	case mcp.MethodNotificationMessage:
		m.relayNotification(c, n)
	case mcp.MethodNotificationResourceUpdated:
		m.resourceUpdated(n)
	}
}

// rpcError is a JSON-RPC error answer from an upstream.
type rpcError struct {
	Code    int
	Message string
}

func (e *rpcError) Error() string { return fmt.Sprintf("JSON-RPC error %d: %s", e.Code, e.Message) }

// rpc sends one request through the transport and returns the raw result.
// Going below mcp-go's typed client keeps the upstream's JSON as sent
// (schemas, numbers) and its JSON-RPC error codes, which the client drops.
// When ctx ends first, the upstream is told with notifications/cancelled.
func (m *Manager) rpc(ctx context.Context, c *conn, method string, params any) (json.RawMessage, error) {
	// String ids never collide with the integer ids mcp-go's client uses on
	// the same transport.
	id := mcp.NewRequestId(fmt.Sprintf("toolgate-%d", m.reqSeq.Add(1)))
	req := transport.JSONRPCRequest{JSONRPC: mcp.JSONRPC_VERSION, ID: id, Method: method, Params: params}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if r := relayFrom(ctx); r != nil {
		defer c.relays.remove(c.relays.add(r))
	}
	resp, err := c.transport.SendRequest(ctx, req)
	if err != nil {
		if ctx.Err() != nil {
			m.sendCancelled(c, id, ctx.Err())
			return nil, fmt.Errorf("%s: %w", method, ctx.Err())
		}
		return nil, fmt.Errorf("%s: %w", method, err)
	}
	if resp.Error != nil {
		return nil, &rpcError{Code: resp.Error.Code, Message: resp.Error.Message}
	}
	return resp.Result, nil
}

// sendCancelled tells the upstream to stop a request (MCP 2025-11-25
// basic/utilities/cancellation). Best effort and off the caller's path.
func (m *Manager) sendCancelled(c *conn, id mcp.RequestId, reason error) {
	n := mcp.JSONRPCNotification{
		JSONRPC: mcp.JSONRPC_VERSION,
		Notification: mcp.Notification{
			Method: string(mcp.MethodNotificationCancelled),
			Params: mcp.NotificationParams{AdditionalFields: map[string]any{"requestId": id, "reason": reason.Error()}},
		},
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(m.ctx), 5*time.Second)
		defer cancel()
		_ = c.transport.SendNotification(ctx, n)
	}()
}

// list fetches everything the upstream offers, following pagination.
func (m *Manager) list(ctx context.Context, u *upstream, c *conn) (*listing, error) {
	caps := c.client.GetServerCapabilities()
	l := &listing{}
	if caps.Tools != nil {
		raws, err := m.listAll(ctx, c, string(mcp.MethodToolsList), "tools")
		if err != nil {
			return nil, err
		}
		seen := map[string]bool{}
		for _, raw := range raws {
			var head struct {
				Name string `json:"name"`
			}
			if err := json.Unmarshal(raw, &head); err != nil {
				l.problems = append(l.problems, fmt.Sprintf("server %q: a tool could not be decoded (%v); left out", u.cfg.Name, err))
				continue
			}
			name := m.publicName(u.cfg, head.Name)
			switch {
			case head.Name == "" || !toolNameRE.MatchString(name):
				l.problems = append(l.problems, fmt.Sprintf("server %q tool %q: namespaced name %q is invalid (allowed: letters, digits, '_', '.', '-'; 1-128 characters); left out", u.cfg.Name, head.Name, name))
				continue
			case seen[head.Name]:
				l.problems = append(l.problems, fmt.Sprintf("server %q tool %q: listed twice; the second is left out", u.cfg.Name, head.Name))
				continue
			}
			seen[head.Name] = true
			l.tools = append(l.tools, Tool{Name: name, Server: u.cfg.Name, Upstream: head.Name, Raw: raw, Labels: labelsFor(u.cfg, head.Name)})
		}
	}
	if caps.Resources != nil {
		raws, err := m.listAll(ctx, c, string(mcp.MethodResourcesList), "resources")
		if err != nil {
			return nil, err
		}
		for _, raw := range raws {
			var head struct {
				Name string `json:"name"`
				URI  string `json:"uri"`
			}
			if err := json.Unmarshal(raw, &head); err != nil || head.URI == "" {
				l.problems = append(l.problems, fmt.Sprintf("server %q: a resource without a readable uri was left out", u.cfg.Name))
				continue
			}
			l.resources = append(l.resources, Resource{Name: m.publicName(u.cfg, head.Name), Server: u.cfg.Name, Upstream: head.Name, URI: head.URI, Raw: raw})
		}
		raws, err = m.listAll(ctx, c, string(mcp.MethodResourcesTemplatesList), "resourceTemplates")
		if err != nil {
			return nil, err
		}
		for _, raw := range raws {
			var head struct {
				Name        string           `json:"name"`
				URITemplate *mcp.URITemplate `json:"uriTemplate"`
			}
			if err := json.Unmarshal(raw, &head); err != nil || head.URITemplate == nil || head.URITemplate.Template == nil {
				l.problems = append(l.problems, fmt.Sprintf("server %q: a resource template without a valid uriTemplate was left out", u.cfg.Name))
				continue
			}
			l.templates = append(l.templates, ResourceTemplate{Name: m.publicName(u.cfg, head.Name), Server: u.cfg.Name, Upstream: head.Name,
				URITemplate: head.URITemplate.Raw(), Raw: raw, template: head.URITemplate})
		}
	}
	if caps.Prompts != nil {
		raws, err := m.listAll(ctx, c, string(mcp.MethodPromptsList), "prompts")
		if err != nil {
			return nil, err
		}
		for _, raw := range raws {
			var head struct {
				Name string `json:"name"`
			}
			if err := json.Unmarshal(raw, &head); err != nil || head.Name == "" {
				l.problems = append(l.problems, fmt.Sprintf("server %q: a prompt without a name was left out", u.cfg.Name))
				continue
			}
			l.prompts = append(l.prompts, Prompt{Name: m.publicName(u.cfg, head.Name), Server: u.cfg.Name, Upstream: head.Name, Raw: raw})
		}
	}
	return l, nil
}

// maxListPages stops an upstream whose cursors never end.
const maxListPages = 1000

// listAll pages through a list method and returns each item's raw object.
func (m *Manager) listAll(ctx context.Context, c *conn, method, field string) ([]json.RawMessage, error) {
	var out []json.RawMessage
	cursor := ""
	seen := map[string]bool{}
	for page := 0; ; page++ {
		if page == maxListPages {
			return nil, fmt.Errorf("%s: more than %d pages", method, maxListPages)
		}
		var params any
		if cursor != "" {
			params = map[string]any{"cursor": cursor}
		}
		raw, err := m.rpc(ctx, c, method, params)
		if err != nil {
			return nil, err
		}
		var res map[string]json.RawMessage
		if err := json.Unmarshal(raw, &res); err != nil {
			return nil, fmt.Errorf("%s: decode result: %w", method, err)
		}
		var items []json.RawMessage
		if v, ok := res[field]; ok {
			if err := json.Unmarshal(v, &items); err != nil {
				return nil, fmt.Errorf("%s: decode %s: %w", method, field, err)
			}
		}
		out = append(out, items...)
		var next string
		if v, ok := res["nextCursor"]; ok {
			_ = json.Unmarshal(v, &next)
		}
		if next == "" {
			return out, nil
		}
		if seen[next] {
			return nil, fmt.Errorf("%s: cursor %q repeated", method, next)
		}
		seen[next] = true
		cursor = next
	}
}
