package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mark3labs/mcp-go/server"

	"github.com/toolgate/toolgate/sessions"
)

// agentSession is the toolgate session a request runs in, put in the
// request's context by the authentication middleware.
type agentSession struct {
	ID      string
	Agent   string
	Profile string
	Claims  map[string]any
	// Snapshot is the session as read when the request was authenticated
	// (used for tools/list; calls are decided on a fresh snapshot).
	Snapshot *sessions.Session

	untrack  func()      // stops this request being cancelled with its session
	endAfter atomic.Bool // end the session once this request is answered
}

// keepAlive stops this request being cancelled when its session ends, so
// that it can carry the answer of the call that ends it.
func (as *agentSession) keepAlive() {
	if as.untrack != nil {
		as.untrack()
	}
}

// endAfterAnswer keeps this request alive while the session ends and ends
// the session's other requests on this replica once it has answered.
func (as *agentSession) endAfterAnswer() {
	as.keepAlive()
	as.endAfter.Store(true)
}

type sessionCtxKey struct{}

func withAgentSession(ctx context.Context, s *agentSession) context.Context {
	return context.WithValue(ctx, sessionCtxKey{}, s)
}

func agentSessionFrom(ctx context.Context) *agentSession {
	s, _ := ctx.Value(sessionCtxKey{}).(*agentSession)
	return s
}

// liveRegistry tracks, per toolgate session, the requests in progress on
// this replica (in-flight calls and open streams) and the MCP transport
// sessions bound to it, so that a revoke or freeze can end them at once.
type liveRegistry struct {
	mu        sync.Mutex
	requests  map[string]map[*context.CancelFunc]struct{} // toolgate session -> cancel funcs
	transport map[string]string                           // MCP transport session -> toolgate session
	byAgent   map[string]map[string]struct{}              // toolgate session -> its transport sessions
	gone      map[string]time.Time                        // sessions ended, when this replica learnt it
	gates     map[string]*sync.RWMutex                    // held by a session's forwards, taken by its end
}

// goneMemory is how long a replica remembers that a session ended, to
// stop calls admitted just before; the store refuses later ones anyway.
const goneMemory = time.Minute

// endWait bounds how long ending a session waits for its forwards in
// progress to return after they were cancelled.
const endWait = 200 * time.Millisecond

func newLiveRegistry() *liveRegistry {
	return &liveRegistry{
		requests:  map[string]map[*context.CancelFunc]struct{}{},
		transport: map[string]string{},
		byAgent:   map[string]map[string]struct{}{},
		gone:      map[string]time.Time{},
		gates:     map[string]*sync.RWMutex{},
	}
}

func (r *liveRegistry) gate(sessionID string) *sync.RWMutex {
	r.mu.Lock()
	defer r.mu.Unlock()
	g := r.gates[sessionID]
	if g == nil {
		g = &sync.RWMutex{}
		r.gates[sessionID] = g
	}
	return g
}

// beginForward holds the session's gate while a call admitted at admitted
// is forwarded; it refuses when the session ended since. The returned
// function releases the gate.
func (r *liveRegistry) beginForward(sessionID string, admitted time.Time) (done func(), ok bool) {
	g := r.gate(sessionID)
	g.RLock()
	if r.endedAfter(sessionID, admitted) {
		g.RUnlock()
		return nil, false
	}
	return g.RUnlock, true
}

// endedAfter reports whether this replica learnt that the session ended
// at or after admitted: a call admitted then must not leave. A call the
// store admitted after the end was learnt belongs to a resumed session.
func (r *liveRegistry) endedAfter(sessionID string, admitted time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	at, ok := r.gone[sessionID]
	return ok && !at.Before(admitted)
}

// track registers a request's cancel function under a session; the
// returned function removes it.
func (r *liveRegistry) track(sessionID string, cancel context.CancelFunc) func() {
	key := &cancel
	r.mu.Lock()
	m := r.requests[sessionID]
	if m == nil {
		m = map[*context.CancelFunc]struct{}{}
		r.requests[sessionID] = m
	}
	m[key] = struct{}{}
	r.mu.Unlock()
	return func() {
		r.mu.Lock()
		delete(m, key)
		if len(m) == 0 && r.requests[sessionID] != nil && len(r.requests[sessionID]) == 0 {
			delete(r.requests, sessionID)
		}
		r.mu.Unlock()
	}
}

// end cancels every request of a session, waits until its forwards in
// progress have returned, marks it ended, and forgets its transport
// sessions; it returns those transport sessions.
func (r *liveRegistry) end(sessionID string) []string {
	r.mu.Lock()
	var cancels0 []context.CancelFunc
	for k := range r.requests[sessionID] {
		cancels0 = append(cancels0, *k)
	}
	r.mu.Unlock()
	for _, c := range cancels0 {
		c() // in-flight forwards return promptly once cancelled
	}
	// Wait for the forwards holding the gate, a bounded time: a forward
	// that cannot be cancelled (its request is carrying an answer) must
	// not hold up this replica's events.
	g := r.gate(sessionID)
	locked := false
	for deadline := time.Now().Add(endWait); ; time.Sleep(time.Millisecond) {
		if locked = g.TryLock(); locked || time.Now().After(deadline) {
			break
		}
	}
	r.mu.Lock()
	now := time.Now()
	for id, at := range r.gone {
		if now.Sub(at) > goneMemory {
			delete(r.gone, id)
			delete(r.gates, id)
		}
	}
	r.gone[sessionID] = now
	if locked {
		g.Unlock()
	}
	var cancels []context.CancelFunc
	for k := range r.requests[sessionID] {
		cancels = append(cancels, *k)
	}
	delete(r.requests, sessionID)
	var ts []string
	for t := range r.byAgent[sessionID] {
		ts = append(ts, t)
		delete(r.transport, t)
	}
	delete(r.byAgent, sessionID)
	r.mu.Unlock()
	for _, c := range cancels {
		c()
	}
	return ts
}

// bind records that an MCP transport session belongs to a toolgate session.
func (r *liveRegistry) bind(transportID, sessionID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.transport[transportID] = sessionID
	m := r.byAgent[sessionID]
	if m == nil {
		m = map[string]struct{}{}
		r.byAgent[sessionID] = m
	}
	m[transportID] = struct{}{}
}

func (r *liveRegistry) unbind(transportID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s, ok := r.transport[transportID]; ok {
		delete(r.byAgent[s], transportID)
		if len(r.byAgent[s]) == 0 {
			delete(r.byAgent, s)
		}
		delete(r.transport, transportID)
	}
}

// owner returns the toolgate session a transport session is bound to.
func (r *liveRegistry) owner(transportID string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.transport[transportID]
	return s, ok
}

// transports returns the transport sessions bound to a toolgate session.
func (r *liveRegistry) transports(sessionID string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for t := range r.byAgent[sessionID] {
		out = append(out, t)
	}
	return out
}

// registerHooks binds MCP transport sessions to the toolgate session of
// the request that opened them.
func (g *Gateway) registerHooks(h *server.Hooks) {
	h.AddOnRegisterSession(func(ctx context.Context, s server.ClientSession) {
		if as := agentSessionFrom(ctx); as != nil && s.SessionID() != "" {
			g.live.bind(s.SessionID(), as.ID)
		}
	})
	h.AddOnUnregisterSession(func(ctx context.Context, s server.ClientSession) {
		g.live.unbind(s.SessionID())
	})
}

// bearer returns the token of an "Authorization: Bearer" header.
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// implicitToken is the session token of the implicit session an agent
// credential opens: derived from the credential, so every replica finds
// the same session, and useless without the credential.
func implicitToken(credential string) string {
	sum := sha256.Sum256([]byte("toolgate implicit session\x00" + credential))
	return "implicit-" + hex.EncodeToString(sum[:])
}

// authenticate resolves the request's bearer token to an active session:
// a session token from the token endpoint, or an agent credential that
// opens (or reuses) the agent's implicit session.
func (g *Gateway) authenticate(r *http.Request) (*agentSession, *httpError) {
	token := bearer(r)
	if token == "" {
		return nil, g.unauthorized("", "this endpoint needs an Authorization: Bearer token (a session token, or an agent credential)")
	}
	ctx := r.Context()
	hash := sessions.HashToken(token)
	// A tools/call is admitted on a fresh snapshot right after this: a recent lookup of
	// the token is enough to let it reach admission (see authCache).
	toolsCall := methodFrom(ctx) == "tools/call"
	if toolsCall {
		if sess, ok := g.tokens.get(hash, g.now()); ok {
			return &agentSession{ID: sess.ID, Agent: sess.Agent, Profile: sess.Profile, Snapshot: sess,
				Claims: map[string]any{"sub": sess.Agent, "profile": sess.Profile}}, nil
		}
	}
	gen := g.tokens.generation()
	sess, err := g.store.LookupToken(ctx, hash)
	if err == nil && toolsCall {
		g.tokens.put(gen, hash, sess)
	}
	if errors.Is(err, sessions.ErrNotFound) && g.auth != nil && g.auth.IsCredential(token) {
		return g.implicitSession(ctx, token)
	}
	if err != nil {
		return nil, g.sessionError(err)
	}
	return &agentSession{ID: sess.ID, Agent: sess.Agent, Profile: sess.Profile, Snapshot: sess,
		Claims: map[string]any{"sub": sess.Agent, "profile": sess.Profile}}, nil
}

func (g *Gateway) implicitSession(ctx context.Context, credential string) (*agentSession, *httpError) {
	id, err := g.auth.Authenticate(ctx, credential)
	if err != nil {
		g.log.Info("agent credential refused", "err", err)
		return nil, g.unauthorized("invalid_token", "the credential is not valid")
	}
	token := implicitToken(credential)
	hash := sessions.HashToken(token)
	for attempt := 0; attempt < 3; attempt++ {
		sess, err := g.store.LookupToken(ctx, hash)
		if err == nil {
			if sess.Agent != id.Agent {
				return nil, g.unauthorized("invalid_token", "the credential is not valid")
			}
			return &agentSession{ID: sess.ID, Agent: sess.Agent, Profile: sess.Profile, Claims: id.Claims, Snapshot: sess}, nil
		}
		if !errors.Is(err, sessions.ErrNotFound) {
			return nil, g.sessionError(err)
		}
		spec, herr := g.specFor(id, "")
		if herr != nil {
			return nil, herr
		}
		spec.Token = token
		sess, _, err = g.store.Create(ctx, spec)
		switch {
		case err == nil:
			g.log.Info("implicit session opened", "session", sess.ID, "agent", sess.Agent, "profile", sess.Profile)
			return &agentSession{ID: sess.ID, Agent: sess.Agent, Profile: sess.Profile, Claims: id.Claims, Snapshot: sess}, nil
		case errors.Is(err, sessions.ErrTokenTaken):
			continue // another replica opened it first
		default:
			return nil, g.sessionError(err)
		}
	}
	return nil, &httpError{status: http.StatusServiceUnavailable, code: -32000, msg: "could not open a session: retry"}
}

// specFor is the session an identity gets now, with an optional narrower
// scope (space-separated globs).
func (g *Gateway) specFor(id Identity, scope string) (sessions.Spec, *httpError) {
	p := g.profiles[id.Profile]
	if p == nil {
		return sessions.Spec{}, &httpError{status: http.StatusForbidden, code: -32001, oauth: "unauthorized_client",
			msg: fmt.Sprintf("agent %q has profile %q, which is not configured", id.Agent, id.Profile)}
	}
	granted, err := p.narrowScope(scope)
	if err != nil {
		return sessions.Spec{}, &httpError{status: http.StatusBadRequest, code: -32001, oauth: "invalid_scope", msg: err.Error()}
	}
	spec, err := p.Spec(id, granted, g.now())
	if err != nil {
		return sessions.Spec{}, &httpError{status: http.StatusForbidden, code: -32001, oauth: "unauthorized_client",
			msg: fmt.Sprintf("agent %q may not open a session now: %v", id.Agent, err)}
	}
	return spec, nil
}

// httpError is a refusal before the MCP layer.
type httpError struct {
	status int
	code   int    // JSON-RPC code for MCP endpoints
	oauth  string // RFC 6749 error code for the token endpoint
	msg    string
	header map[string]string
}

func (g *Gateway) unauthorized(errCode, msg string) *httpError {
	v := fmt.Sprintf(`Bearer resource_metadata=%q`, g.publicURL()+"/.well-known/oauth-protected-resource/mcp")
	if errCode != "" {
		v += fmt.Sprintf(`, error=%q, error_description=%q`, errCode, msg)
	}
	return &httpError{status: http.StatusUnauthorized, code: -32001, oauth: "invalid_token", msg: msg,
		header: map[string]string{"WWW-Authenticate": v}}
}

// sessionError turns a store error met while authenticating into a refusal.
func (g *Gateway) sessionError(err error) *httpError {
	var se *sessions.StateError
	switch {
	case errors.Is(err, sessions.ErrUnavailable):
		g.metrics.storeErrors.Add(1)
		g.log.Warn("session store unavailable", "err", err)
		return &httpError{status: http.StatusServiceUnavailable, code: -32000,
			msg: "the session store is unavailable: retry shortly", header: map[string]string{"Retry-After": "1"}}
	case errors.As(err, &se) && se.State == sessions.StateFrozen:
		return &httpError{status: http.StatusForbidden, code: -32001, oauth: "access_denied", msg: "this session is frozen: " + se.Reason}
	case errors.As(err, &se):
		return g.unauthorized("invalid_token", fmt.Sprintf("the session is %s", se.State))
	case errors.Is(err, sessions.ErrNotFound), errors.Is(err, sessions.ErrInvalid):
		return g.unauthorized("invalid_token", "the token is unknown or expired")
	case errors.Is(err, sessions.ErrAgentLocked):
		return &httpError{status: http.StatusForbidden, code: -32001, oauth: "unauthorized_client", msg: "the agent is locked"}
	}
	g.log.Error("session lookup failed", "err", err)
	return &httpError{status: http.StatusInternalServerError, code: -32603, msg: "internal error"}
}

// authHandler authenticates MCP requests, checks that a transport session
// is used by the session that opened it, and tracks the request so that a
// revoke can cancel it.
func (g *Gateway) authHandler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ar, span := g.startAuth(r) // telemetry.go
		as, herr := g.authenticate(ar)
		endAuth(r.Context(), span, as, herr)
		if herr != nil {
			writeHTTPError(w, herr)
			return
		}
		transportID := r.Header.Get("Mcp-Session-Id")
		if transportID == "" {
			transportID = r.URL.Query().Get("sessionId")
		}
		if transportID != "" {
			if owner, ok := g.live.owner(transportID); ok && owner != as.ID {
				writeHTTPError(w, &httpError{status: http.StatusForbidden, code: -32001,
					msg: "this MCP session belongs to another toolgate session"})
				return
			}
		}
		ctx, cancel := context.WithCancel(withAgentSession(r.Context(), as))
		as.untrack = sync.OnceFunc(g.live.track(as.ID, cancel))
		defer as.untrack()
		defer cancel()
		next.ServeHTTP(w, r.WithContext(ctx))
		if as.endAfter.Load() {
			g.endSession(as.ID)
		}
	})
}

func writeHTTPError(w http.ResponseWriter, e *httpError) {
	for k, v := range e.header {
		w.Header().Set(k, v)
	}
	writeEdgeError(w, &edgeError{status: e.status, code: e.code, msg: e.msg})
}
