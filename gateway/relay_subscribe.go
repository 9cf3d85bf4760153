package gateway

import (
	"context"
	"sync"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/toolgate/toolgate/tools"
)

// ResourceSubscriber is what the gateway needs to relay resource
// subscriptions; *tools.Manager implements it. With upstreams that do not,
// subscriptions are acknowledged and never report updates.
type ResourceSubscriber interface {
	Subscribe(ctx context.Context, uri string) error
	Unsubscribe(ctx context.Context, uri string) error
	OnResourceUpdated(func(uri string))
}

var _ ResourceSubscriber = (*tools.Manager)(nil)

// subscriptions maps resource URIs to the MCP transport sessions subscribed
// to them. The upstream is subscribed once per URI, for the first agent
// session, and unsubscribed after the last.
type subscriptions struct {
	mu    sync.Mutex
	byURI map[string]map[string]struct{} // uri -> transport session ids
}

// add records a subscription and reports whether uri had none before.
func (s *subscriptions) add(session, uri string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byURI == nil {
		s.byURI = map[string]map[string]struct{}{}
	}
	m := s.byURI[uri]
	first := len(m) == 0
	if m == nil {
		m = map[string]struct{}{}
		s.byURI[uri] = m
	}
	m[session] = struct{}{}
	return first
}

// remove drops subscriptions of session (to uri, or to every URI when uri is
// empty) and returns the URIs that now have no subscriber.
func (s *subscriptions) remove(session, uri string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var last []string
	for u, m := range s.byURI {
		if uri != "" && u != uri {
			continue
		}
		if _, ok := m[session]; !ok {
			continue
		}
		delete(m, session)
		if len(m) == 0 {
			delete(s.byURI, u)
			last = append(last, u)
		}
	}
	return last
}

func (s *subscriptions) sessions(uri string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.byURI[uri]))
	for id := range s.byURI[uri] {
		out = append(out, id)
	}
	return out
}

// registerRelayHooks relays resources/subscribe and unsubscribe to the
// upstreams, and their updates to the subscribed agents.
func (g *Gateway) registerRelayHooks(h *server.Hooks) {
	sub, ok := g.up.(ResourceSubscriber)
	if !ok {
		return
	}
	subs := &subscriptions{}
	sub.OnResourceUpdated(func(uri string) {
		for _, id := range subs.sessions(uri) {
			if err := g.mcp.SendNotificationToSpecificClient(id, mcp.MethodNotificationResourceUpdated, map[string]any{"uri": uri}); err != nil {
				g.log.Debug("resource update not delivered", "uri", uri, "transport", id, "err", err)
			}
		}
	})
	unsubscribe := func(uris []string) {
		for _, uri := range uris {
			// Off the request path: the agent's answer does not wait on it.
			go func() {
				if err := sub.Unsubscribe(context.Background(), uri); err != nil {
					g.log.Debug("upstream unsubscribe failed", "uri", uri, "err", err)
				}
			}()
		}
	}
	h.AddAfterSubscribe(func(ctx context.Context, _ any, req *mcp.SubscribeRequest, _ *mcp.EmptyResult) {
		s := server.ClientSessionFromContext(ctx)
		if s == nil || s.SessionID() == "" || agentSessionFrom(ctx) == nil {
			return // no transport session to send updates to
		}
		if subs.add(s.SessionID(), req.Params.URI) {
			if err := sub.Subscribe(ctx, req.Params.URI); err != nil {
				g.log.Warn("upstream subscribe failed; the agent will get no updates", "uri", req.Params.URI, "err", err)
			}
		}
	})
	h.AddAfterUnsubscribe(func(ctx context.Context, _ any, req *mcp.UnsubscribeRequest, _ *mcp.EmptyResult) {
		if s := server.ClientSessionFromContext(ctx); s != nil && s.SessionID() != "" {
			unsubscribe(subs.remove(s.SessionID(), req.Params.URI))
		}
	})
	h.AddOnUnregisterSession(func(_ context.Context, s server.ClientSession) {
		unsubscribe(subs.remove(s.SessionID(), ""))
	})
}
