package tools

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"

	"github.com/mark3labs/mcp-go/mcp"
)

// relayState is what the Manager keeps for relaying resource updates; its
// zero value is ready.
type relayState struct {
	mu        sync.Mutex
	onUpdated func(uri string)
}

// OnResourceUpdated sets the function called with the URI of every
// notifications/resources/updated an upstream sends. It runs on the
// connection's reader and must return quickly. Nil stops the calls.
func (m *Manager) OnResourceUpdated(f func(uri string)) {
	m.relay.mu.Lock()
	m.relay.onUpdated = f
	m.relay.mu.Unlock()
}

func (m *Manager) resourceUpdated(n mcp.JSONRPCNotification) {
	m.relay.mu.Lock()
	f := m.relay.onUpdated
	m.relay.mu.Unlock()
	if f == nil {
		return
	}
	raw, err := json.Marshal(n.Params)
	if err != nil {
		return
	}
	var p struct {
		URI string `json:"uri"`
	}
	if json.Unmarshal(raw, &p) == nil && p.URI != "" {
		f(p.URI)
	}
}

// Subscribe asks the server that offers uri for its updates
// (resources/subscribe). A server without the subscribe capability is not
// asked, and the call succeeds: its resources just never report updates.
func (m *Manager) Subscribe(ctx context.Context, uri string) error {
	return m.subscription(ctx, string(mcp.MethodResourcesSubscribe), uri)
}

// Unsubscribe undoes Subscribe.
func (m *Manager) Unsubscribe(ctx context.Context, uri string) error {
	return m.subscription(ctx, string(mcp.MethodResourcesUnsubscribe), uri)
}

func (m *Manager) subscription(ctx context.Context, method, uri string) error {
	u, c, err := m.resourceOwner(uri)
	if err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	caps := c.client.GetServerCapabilities()
	if caps.Resources == nil || !caps.Resources.Subscribe {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, u.cfg.Timeout)
	defer cancel()
	if _, err := m.rpc(ctx, c, method, map[string]any{"uri": uri}); err != nil {
		m.suspect(c, err)
		return fmt.Errorf("%s %q at server %q: %w", method, uri, u.cfg.Name, err)
	}
	return nil
}

// resourceOwner finds the one connected server that offers uri, by exact URI
// first and then by URI template, as ReadResource does.
func (m *Manager) resourceOwner(uri string) (*upstream, *conn, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
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
	switch {
	case len(owners) == 0:
		return nil, nil, fmt.Errorf("resource %q: no server offers it", uri)
	case len(owners) > 1:
		return nil, nil, fmt.Errorf("resource %q: servers %s all offer it", uri, quoteJoin(owners))
	}
	u := m.byName[owners[0]]
	if u.conn == nil {
		return nil, nil, fmt.Errorf("resource %q: server %q is unavailable", uri, u.cfg.Name)
	}
	return u, u.conn, nil
}
