// Package tools connects toolgate to its upstream MCP tool servers and offers their tools, resources and prompts as one namespaced catalog.
package tools

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
)

// Server states reported by Health.
const (
	StateConnecting = "connecting" // first connection attempts still running
	StateReady      = "ready"      // connected; its tools are in the catalog
	StateDown       = "down"       // not connected; reconnecting in the background
)

// Options tunes a Manager. Zero values mean the documented defaults.
type Options struct {
	// Logger receives connection and catalog events; nil discards them.
	Logger *slog.Logger
	// OnChange is called after the tool, resource or prompt catalog changed
	// (a server came up or went down, or an upstream's list changed). It is
	// never called under a lock of the Manager, may be called from any
	// goroutine, and may call the Manager back. Nil: nothing is called.
	OnChange func()
	// ConnectAttempts bounds the attempts Start waits for per server; default 5.
	// A server still down afterwards keeps reconnecting in the background.
	ConnectAttempts int
	// InitialBackoff is the pause after the first failed attempt, doubling up
	// to MaxBackoff; defaults 200ms and 5s.
	InitialBackoff, MaxBackoff time.Duration
	// HealthInterval is how often a connected server is pinged to notice that
	// it died; default 10s.
	HealthInterval time.Duration
	// LookupEnv resolves env_from and headers_from_env; nil: os.LookupEnv.
	LookupEnv func(name string) (string, bool)
}

// ServerHealth is one server's connection state.
type ServerHealth struct {
	Name       string
	Transport  string
	State      string // StateConnecting, StateReady or StateDown
	LastError  string // the last connection or health-check failure; "" if none
	Tools      int    // tools it offers (before collisions are removed)
	Reconnects int    // times it came back after being lost
	Since      time.Time
}

// Manager holds the connections to all upstream servers and their merged catalog.
type Manager struct {
	cfg  Config
	sep  string
	opts Options
	log  *slog.Logger

	ctx    context.Context // lives until Close; parent of every connection
	cancel context.CancelFunc
	wg     sync.WaitGroup

	started   atomic.Bool
	closeOnce sync.Once
	reqSeq    atomic.Uint64

	mu        sync.RWMutex
	upstreams []*upstream // config order
	byName    map[string]*upstream
	cat       *catalog

	progressMu sync.Mutex
	progress   map[string]*progressRoute // upstream progress token -> in-flight call

	relay relayState // resource-update listener (relay_subscribe.go)
}

// New validates cfg and prepares a Manager; it does no I/O.
func New(cfg Config, opts Options) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("tools config: %w", err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.ConnectAttempts <= 0 {
		opts.ConnectAttempts = 5
	}
	if opts.InitialBackoff <= 0 {
		opts.InitialBackoff = 200 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 5 * time.Second
	}
	if opts.MaxBackoff < opts.InitialBackoff {
		opts.MaxBackoff = opts.InitialBackoff
	}
	if opts.HealthInterval <= 0 {
		opts.HealthInterval = 10 * time.Second
	}
	m := &Manager{
		cfg:      cfg,
		sep:      cfg.separator(),
		opts:     opts,
		log:      opts.Logger,
		byName:   map[string]*upstream{},
		cat:      mergeCatalog(nil),
		progress: map[string]*progressRoute{},
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	for _, sc := range cfg.Servers {
		if sc.Timeout == 0 {
			sc.Timeout = DefaultTimeout
		}
		u := &upstream{cfg: sc, state: StateConnecting, since: time.Now()}
		if sc.Transport == TransportStreamableHTTP || sc.Transport == TransportSSE {
			u.http = newHTTPClient()
		}
		m.upstreams = append(m.upstreams, u)
		m.byName[sc.Name] = u
	}
	return m, nil
}

// Start connects to every server concurrently and returns once each is ready
// or has used up its initial attempts; those keep reconnecting in the
// background until Close. The error lists the servers that are down and the
// tools left out of the catalog; it never means the Manager is unusable.
// ctx bounds only the wait, not the connections.
func (m *Manager) Start(ctx context.Context) error {
	if !m.started.CompareAndSwap(false, true) {
		return errors.New("tools: Start called twice")
	}
	if m.ctx.Err() != nil {
		return errors.New("tools: Start after Close")
	}
	done := make(chan struct{}, len(m.upstreams))
	for _, u := range m.upstreams {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.run(u, func() { done <- struct{}{} })
		}()
	}
	for range m.upstreams {
		select {
		case <-done:
		case <-ctx.Done():
			return fmt.Errorf("tools: start: %w", ctx.Err())
		}
	}
	var errs []error
	m.mu.RLock()
	for _, u := range m.upstreams {
		if u.state != StateReady {
			errs = append(errs, fmt.Errorf("server %q is down (reconnecting in the background): %s", u.cfg.Name, u.lastErr))
		}
	}
	for _, p := range m.cat.problems {
		errs = append(errs, errors.New(p))
	}
	m.mu.RUnlock()
	if len(errs) > 0 {
		return fmt.Errorf("tools: start: %w", errors.Join(errs...))
	}
	return nil
}

// Close disconnects every server and stops reconnecting; in-flight calls fail.
func (m *Manager) Close() error {
	m.closeOnce.Do(func() {
		m.cancel()
		m.wg.Wait()
	})
	var errs []error
	m.mu.Lock()
	for _, u := range m.upstreams {
		if u.builtin != nil {
			errs = append(errs, u.builtin.Close())
			u.builtin = nil
		}
	}
	m.mu.Unlock()
	return errors.Join(errs...)
}

// Tools returns the catalog, sorted by name.
func (m *Manager) Tools() []Tool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return slices.Clone(m.cat.tools)
}

// Tool looks a tool up by its namespaced name.
func (m *Manager) Tool(name string) (Tool, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	t, ok := m.cat.byName[name]
	return t, ok
}

// Resources returns every upstream resource, names namespaced, URIs unchanged.
func (m *Manager) Resources() []Resource {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return slices.Clone(m.cat.resources)
}

// ResourceTemplates returns every upstream resource template, names namespaced.
func (m *Manager) ResourceTemplates() []ResourceTemplate {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return slices.Clone(m.cat.templates)
}

// Prompts returns every upstream prompt, names namespaced.
func (m *Manager) Prompts() []Prompt {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return slices.Clone(m.cat.prompts)
}

// Health reports each server's state, in config order.
func (m *Manager) Health() []ServerHealth {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]ServerHealth, 0, len(m.upstreams))
	for _, u := range m.upstreams {
		h := ServerHealth{
			Name:       u.cfg.Name,
			Transport:  u.cfg.Transport,
			State:      u.state,
			LastError:  u.lastErr,
			Reconnects: u.reconnects,
			Since:      u.since,
		}
		if u.listing != nil {
			h.Tools = len(u.listing.tools)
		}
		out = append(out, h)
	}
	return out
}

// ReadResource reads a resource from the server that offers it: first by the
// exact URI of the last listing, then by the servers' URI templates. A URI
// that two servers claim is an error naming both.
func (m *Manager) ReadResource(ctx context.Context, uri string) (*mcp.ReadResourceResult, error) {
	m.mu.RLock()
	var owners []string
	for _, r := range m.cat.resources {
		if r.URI == uri && !slices.Contains(owners, r.Server) {
			owners = append(owners, r.Server)
		}
	}
	if len(owners) == 0 {
		for _, t := range m.cat.templates {
			if t.matches(uri) && !slices.Contains(owners, t.Server) {
				owners = append(owners, t.Server)
			}
		}
	}
	var u *upstream
	var c *conn
	if len(owners) == 1 {
		u = m.byName[owners[0]]
		c = u.conn
	}
	m.mu.RUnlock()
	switch {
	case len(owners) == 0:
		return nil, fmt.Errorf("read resource %q: no server offers it", uri)
	case len(owners) > 1:
		return nil, fmt.Errorf("read resource %q: servers %s all offer it; toolgate cannot tell which to ask", uri, quoteJoin(owners))
	case c == nil:
		return nil, fmt.Errorf("read resource %q: server %q is unavailable", uri, u.cfg.Name)
	}
	ctx, cancel := context.WithTimeout(ctx, u.cfg.Timeout)
	defer cancel()
	raw, err := m.rpc(ctx, c, string(mcp.MethodResourcesRead), map[string]any{"uri": uri})
	if err != nil {
		m.suspect(c, err)
		return nil, fmt.Errorf("read resource %q from server %q: %w", uri, u.cfg.Name, err)
	}
	res, err := mcp.ParseReadResourceResult(&raw)
	if err != nil {
		return nil, fmt.Errorf("read resource %q from server %q: %w", uri, u.cfg.Name, err)
	}
	clearServerMeta(&res.Result)
	return res, nil
}

// GetPrompt gets a prompt by its namespaced name from the server that offers it.
func (m *Manager) GetPrompt(ctx context.Context, name string, args map[string]string) (*mcp.GetPromptResult, error) {
	m.mu.RLock()
	p, ok := m.cat.prompt[name]
	var u *upstream
	var c *conn
	if ok {
		u = m.byName[p.Server]
		c = u.conn
	}
	m.mu.RUnlock()
	switch {
	case !ok:
		return nil, fmt.Errorf("get prompt %q: no such prompt", name)
	case c == nil:
		return nil, fmt.Errorf("get prompt %q: server %q is unavailable", name, p.Server)
	}
	ctx, cancel := context.WithTimeout(ctx, u.cfg.Timeout)
	defer cancel()
	params := map[string]any{"name": p.Upstream}
	if len(args) > 0 {
		params["arguments"] = args
	}
	raw, err := m.rpc(ctx, c, string(mcp.MethodPromptsGet), params)
	if err != nil {
		m.suspect(c, err)
		return nil, fmt.Errorf("get prompt %q from server %q: %w", name, p.Server, err)
	}
	res, err := mcp.ParseGetPromptResult(&raw)
	if err != nil {
		return nil, fmt.Errorf("get prompt %q from server %q: %w", name, p.Server, err)
	}
	clearServerMeta(&res.Result)
	return res, nil
}

// clearServerMeta drops what describes the upstream rather than the answer
// (notes/mcp-go.md pitfall 6): agents talk to toolgate, not to the upstream.
func clearServerMeta(r *mcp.Result) {
	r.Meta = nil
	r.ResultType = ""
}

func quoteJoin(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	return strings.Join(q, " and ")
}

// rebuildLocked merges the listings of ready servers into a new catalog and
// reports whether agents would see a difference. m.mu must be held.
func (m *Manager) rebuildLocked() bool {
	ls := make([]*listing, 0, len(m.upstreams))
	for _, u := range m.upstreams {
		if u.state == StateReady {
			ls = append(ls, u.listing)
		}
	}
	next := mergeCatalog(ls)
	for _, p := range next.problems {
		if !slices.Contains(m.cat.problems, p) {
			m.log.Warn("tool left out of the catalog", "problem", p)
		}
	}
	changed := !m.cat.equal(next)
	m.cat = next
	return changed
}

// changed tells the owner that the catalog changed; never called under m.mu.
func (m *Manager) changed() {
	if m.opts.OnChange != nil {
		m.opts.OnChange()
	}
}
