package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/toolgate/toolgate/internal/audit"
	"github.com/toolgate/toolgate/policies"
	"github.com/toolgate/toolgate/sessions"
)

// AdminConfig is the admin API's own listener and credential.
type AdminConfig struct {
	// Listen is the admin API's address. Empty: the admin API is off.
	Listen string `yaml:"listen"`
	// TokenEnv names the variable holding the admin bearer token, or
	// TokenSHA256 gives its SHA-256 in hex.
	TokenEnv    string `yaml:"token_env"`
	TokenSHA256 string `yaml:"token_sha256"`
}

// Validate checks that an enabled admin API has exactly one credential.
func (c *AdminConfig) Validate() error {
	if c.Listen == "" {
		return nil
	}
	if (c.TokenEnv == "") == (c.TokenSHA256 == "") {
		return fmt.Errorf("admin: give token_env or token_sha256 (exactly one) for the admin API on %s", c.Listen)
	}
	if c.TokenSHA256 != "" {
		if b, err := hex.DecodeString(c.TokenSHA256); err != nil || len(b) != 32 {
			return fmt.Errorf("admin.token_sha256: want 64 hex digits (sha256sum of the token)")
		}
	}
	return nil
}

// AdminOptions are what the admin API needs besides the gateway.
type AdminOptions struct {
	// Policies is the live policy engine, for status and reload. Nil: no policies.
	Policies *policies.Engine
	// LookupEnv reads token_env. Nil: os.LookupEnv.
	LookupEnv func(string) (string, bool)
}

// Limits of the admin API.
const (
	// maxAdminBodyBytes bounds a request body: every admin request is a
	// small JSON object.
	maxAdminBodyBytes = 64 << 10
	// minAdminTokenLen is the shortest admin token accepted from token_env.
	minAdminTokenLen = 16
	// agentSessionsLimit bounds the sessions GET /v1/agents/{agent} lists.
	agentSessionsLimit = 100
)

// AdminHandler serves the admin API: sessions, agents, approvals, policies
// and metrics, as JSON, to holders of the admin token. Every route is under
// /v1; see the route table in the function body.
func (g *Gateway) AdminHandler(cfg AdminConfig, opts AdminOptions) (http.Handler, error) {
	want, err := adminTokenHash(cfg, opts.LookupEnv)
	if err != nil {
		return nil, err
	}
	a := &admin{g: g, policies: opts.Policies, tokenHash: want}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/sessions", a.listSessions)
	mux.HandleFunc("GET /v1/sessions/{id}", a.showSession)
	mux.HandleFunc("POST /v1/sessions/{id}/narrow", a.narrowSession)
	mux.HandleFunc("POST /v1/sessions/{id}/freeze", a.freezeSession)
	mux.HandleFunc("POST /v1/sessions/{id}/resume", a.resumeSession)
	mux.HandleFunc("POST /v1/sessions/{id}/revoke", a.revokeSession)
	mux.HandleFunc("GET /v1/agents/{agent}", a.showAgent)
	mux.HandleFunc("POST /v1/agents/{agent}/revoke", a.revokeAgent)
	mux.HandleFunc("POST /v1/agents/{agent}/lock", a.lockAgent)
	mux.HandleFunc("POST /v1/agents/{agent}/unlock", a.unlockAgent)
	mux.HandleFunc("GET /v1/approvals", a.listApprovals)
	mux.HandleFunc("POST /v1/approvals/{id}/approve", a.resolveApproval(true))
	mux.HandleFunc("POST /v1/approvals/{id}/reject", a.resolveApproval(false))
	mux.HandleFunc("GET /v1/policies", a.policyStatus)
	mux.HandleFunc("POST /v1/policies/reload", a.reloadPolicies)
	mux.HandleFunc("GET /v1/metrics", a.metrics)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeAdminError(w, &adminError{status: http.StatusNotFound, code: "not_found",
			msg: fmt.Sprintf("no admin endpoint %s %s: the routes are under /v1 (sessions, agents, approvals, policies, metrics)", r.Method, r.URL.Path)})
	})
	return a.authenticate(mux), nil
}

// adminTokenHash is the SHA-256 of the admin token the config names.
func adminTokenHash(cfg AdminConfig, lookupEnv func(string) (string, bool)) ([32]byte, error) {
	var want [32]byte
	if cfg.TokenEnv == "" && cfg.TokenSHA256 == "" {
		return want, errors.New("admin API: no credential: set admin.token_env or admin.token_sha256")
	}
	if err := cfg.Validate(); err != nil {
		return want, err
	}
	if cfg.TokenEnv != "" {
		if lookupEnv == nil {
			lookupEnv = os.LookupEnv
		}
		tok, ok := lookupEnv(cfg.TokenEnv)
		tok = strings.TrimSpace(tok)
		if !ok || tok == "" {
			return want, fmt.Errorf("admin.token_env: variable %s is not set: export it with the admin token", cfg.TokenEnv)
		}
		if len(tok) < minAdminTokenLen {
			return want, fmt.Errorf("admin.token_env: the token in %s has %d characters: use at least %d random characters", cfg.TokenEnv, len(tok), minAdminTokenLen)
		}
		return sha256.Sum256([]byte(tok)), nil
	}
	b, _ := hex.DecodeString(cfg.TokenSHA256) // checked by Validate
	copy(want[:], b)
	return want, nil
}

// admin serves the admin API of one gateway.
type admin struct {
	g         *Gateway
	policies  *policies.Engine // nil: no policies configured
	tokenHash [32]byte
}

// authenticate lets through requests bearing the admin token. Hashes are
// compared, in constant time, so neither the token nor its length leaks
// through timing.
func (a *admin) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := bearer(r)
		got := sha256.Sum256([]byte(tok))
		if tok == "" || subtle.ConstantTimeCompare(got[:], a.tokenHash[:]) != 1 {
			msg := "the admin API needs Authorization: Bearer <admin token>"
			challenge := `Bearer realm="toolgate-admin"`
			if tok != "" {
				msg = "the admin token is not valid"
				challenge += `, error="invalid_token"`
				a.g.log.Warn("admin request refused: wrong token", "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path)
			}
			w.Header().Set("WWW-Authenticate", challenge)
			writeAdminError(w, &adminError{status: http.StatusUnauthorized, code: "unauthorized", msg: msg})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// adminError is an admin API failure: an HTTP status, a short machine
// code and a message saying what to do.
type adminError struct {
	status   int
	code     string
	msg      string
	problems []PolicyProblem
}

func (e *adminError) Error() string { return e.msg }

// AdminErrorBody is the JSON of every admin API error.
type AdminErrorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
	// Problems lists what is wrong with the policy files, for a failed reload.
	Problems []PolicyProblem `json:"problems,omitempty"`
}

// PolicyProblem is one problem of a policy set that did not load.
type PolicyProblem struct {
	File    string `json:"file,omitempty"`
	Where   string `json:"where,omitempty"`
	Pos     string `json:"pos,omitempty"`
	Message string `json:"message"`
}

func badRequest(format string, args ...any) *adminError {
	return &adminError{status: http.StatusBadRequest, code: "bad_request", msg: fmt.Sprintf(format, args...)}
}

func writeAdminError(w http.ResponseWriter, e *adminError) {
	if e.status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, e.status, AdminErrorBody{Error: e.code, Message: e.msg, Problems: e.problems})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		body = []byte(`{"error":"internal","message":"the answer could not be encoded"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// storeFailure turns a store error into the admin API's answer; step names
// what was being done, for the message and the log.
func (a *admin) storeFailure(step string, err error) *adminError {
	var se *sessions.StateError
	switch {
	case errors.Is(err, sessions.ErrUnavailable):
		a.g.metrics.storeErrors.Add(1)
		a.g.log.Warn("admin: session store unavailable", "step", step, "err", err)
		return &adminError{status: http.StatusServiceUnavailable, code: "store_unavailable",
			msg: step + ": the session store is unavailable: retry shortly"}
	case errors.As(err, &se):
		return &adminError{status: http.StatusConflict, code: "wrong_state", msg: step + ": " + se.Error()}
	case errors.Is(err, sessions.ErrNotFound):
		return &adminError{status: http.StatusNotFound, code: "not_found",
			msg: step + ": no such session (the id is unknown, or the session ended long enough ago to be deleted)"}
	case errors.Is(err, sessions.ErrInvalid):
		return &adminError{status: http.StatusBadRequest, code: "bad_request", msg: step + ": " + err.Error()}
	case errors.Is(err, sessions.ErrConflict):
		return &adminError{status: http.StatusConflict, code: "conflict", msg: step + ": the session kept changing: retry"}
	case errors.Is(err, sessions.ErrNotReplicated):
		a.g.log.Warn("admin: change not confirmed by the Redis replicas", "step", step, "err", err)
		return &adminError{status: http.StatusServiceUnavailable, code: "not_replicated",
			msg: step + ": done on the Redis master, but its replicas did not confirm it in time, so a failover could undo it: repeat the request"}
	}
	a.g.log.Error("admin: store operation failed", "step", step, "err", err)
	return &adminError{status: http.StatusInternalServerError, code: "internal", msg: step + ": internal error"}
}

// decodeBody strictly decodes a JSON object body into v: unknown fields,
// trailing data and oversized bodies are errors. An empty body leaves v
// unchanged unless required.
func decodeBody(w http.ResponseWriter, r *http.Request, v any, required bool) *adminError {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return &adminError{status: http.StatusUnsupportedMediaType, code: "unsupported_media_type",
				msg: fmt.Sprintf("Content-Type %q: send the body as application/json", ct)}
		}
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAdminBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return &adminError{status: http.StatusRequestEntityTooLarge, code: "too_large",
				msg: fmt.Sprintf("the body is larger than %d bytes", maxAdminBodyBytes)}
		}
		return badRequest("reading the body: %v", err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		if required {
			return badRequest("this endpoint needs a JSON body")
		}
		return nil
	}
	// The same key checks as at the agent edge: Go's decoder would take
	// "Reason" for "reason" and keep the last of two duplicates.
	c := checker{buf: data, maxDepth: DefaultMaxDepth}
	if err := c.value(0); err != nil {
		return badRequest("%v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("the body is not the JSON this endpoint takes: %v", err)
	}
	if dec.More() {
		return badRequest("the body holds data after its JSON object: send one object")
	}
	return nil
}

// AdminSession is a session as the admin API shows it: the store's
// session, with the idle timeout written as a duration ("15m0s").
type AdminSession struct {
	*sessions.Session
	// IdleTimeout shadows the embedded field (nanoseconds in JSON) with
	// its readable form.
	IdleTimeout string `json:"idle_timeout,omitempty"`
}

func adminSession(s *sessions.Session) *AdminSession {
	if s == nil {
		return nil
	}
	v := &AdminSession{Session: s}
	if s.IdleTimeout > 0 {
		v.IdleTimeout = s.IdleTimeout.String()
	}
	return v
}

// SessionPage is one page of GET /v1/sessions.
type SessionPage struct {
	Sessions []*AdminSession `json:"sessions"`
	// Next is the cursor of the next page, or "" after the last one.
	Next string `json:"next,omitempty"`
}

func (a *admin) listSessions(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	for k := range q {
		switch k {
		case "agent", "state", "limit", "cursor":
		default:
			writeAdminError(w, badRequest("unknown query parameter %q: use agent, state, limit or cursor", k))
			return
		}
	}
	opts := sessions.ListOptions{Agent: q.Get("agent"), State: sessions.State(q.Get("state")), Cursor: q.Get("cursor")}
	if opts.State != "" && !opts.State.Valid() {
		writeAdminError(w, badRequest("state %q: use one of %v", opts.State, sessions.States))
		return
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1000 {
			writeAdminError(w, badRequest("limit %q: use a number from 1 to 1000", s))
			return
		}
		opts.Limit = n
	}
	page, err := a.g.store.List(r.Context(), opts)
	if err != nil {
		writeAdminError(w, a.storeFailure("list sessions", err))
		return
	}
	out := SessionPage{Sessions: make([]*AdminSession, len(page.Sessions)), Next: page.Next}
	for i, s := range page.Sessions {
		out.Sessions[i] = adminSession(s)
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *admin) showSession(w http.ResponseWriter, r *http.Request) {
	s, err := a.g.store.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		writeAdminError(w, a.storeFailure("show session", err))
		return
	}
	writeJSON(w, http.StatusOK, adminSession(s))
}

// NarrowRequest is the body of POST /v1/sessions/{id}/narrow: what to take
// away from the session. Narrowing only ever removes.
type NarrowRequest struct {
	// Tools are namespaced tool names or globs ("demo__deploy", "demo__*").
	Tools []string `json:"tools,omitempty"`
	// Labels remove every tool carrying one of them ("destructive").
	Labels []string `json:"labels,omitempty"`
}

func (n NarrowRequest) removals() ([]string, *adminError) {
	if len(n.Tools) == 0 && len(n.Labels) == 0 {
		return nil, badRequest(`nothing to remove: give "tools" (names or globs) and/or "labels"`)
	}
	out := make([]string, 0, len(n.Tools)+len(n.Labels))
	for i, t := range n.Tools {
		switch {
		case strings.TrimSpace(t) == "":
			return nil, badRequest("tools[%d] is empty: give a tool name or glob such as demo__deploy", i)
		case strings.Contains(t, ":"):
			return nil, badRequest("tools[%d] %q: tool names hold no colon; to remove by label use \"labels\"", i, t)
		}
		out = append(out, t)
	}
	for i, l := range n.Labels {
		if strings.TrimSpace(l) == "" {
			return nil, badRequest("labels[%d] is empty: give a tool label such as destructive", i)
		}
		out = append(out, labelPrefix+l)
	}
	return out, nil
}

func (a *admin) narrowSession(w http.ResponseWriter, r *http.Request) {
	var req NarrowRequest
	if e := decodeBody(w, r, &req, true); e != nil {
		writeAdminError(w, e)
		return
	}
	remove, e := req.removals()
	if e != nil {
		writeAdminError(w, e)
		return
	}
	id := r.PathValue("id")
	s, err := a.g.store.Narrow(r.Context(), id, remove)
	if err != nil {
		writeAdminError(w, a.storeFailure("narrow session", err))
		return
	}
	// The store's narrowed event reaches Watch on every replica; telling
	// this replica's agents here as well does not depend on Watch running.
	a.g.notifyToolsChanged(id)
	a.g.log.Info("admin: session narrowed", "session", id, "agent", s.Agent, "removed", remove)
	a.g.audit(r.Context(), audit.Event{Kind: audit.KindNarrow, Session: id, Agent: s.Agent, Profile: s.Profile, Actor: "operator", Removed: remove}) // telemetry.go
	writeJSON(w, http.StatusOK, adminSession(s))
}

// ReasonRequest is the body of freeze and revoke requests.
type ReasonRequest struct {
	Reason string `json:"reason"`
}

func (a *admin) freezeSession(w http.ResponseWriter, r *http.Request) {
	var req ReasonRequest
	if e := decodeBody(w, r, &req, false); e != nil {
		writeAdminError(w, e)
		return
	}
	reason := strings.TrimSpace(req.Reason)
	if reason == "" {
		reason = "frozen by an operator"
	}
	id := r.PathValue("id")
	s, err := a.g.store.Freeze(r.Context(), id, reason)
	if err != nil {
		if errors.Is(err, sessions.ErrNotReplicated) {
			a.g.endSession(id) // frozen on the master: stop it here all the same
		}
		writeAdminError(w, a.storeFailure("freeze session", err))
		return
	}
	a.g.endSession(id)
	a.g.log.Info("admin: session frozen", "session", id, "agent", s.Agent, "reason", reason)
	a.g.audit(r.Context(), audit.Event{Kind: audit.KindFreeze, Session: id, Agent: s.Agent, Profile: s.Profile, Actor: "operator", Reason: reason}) // telemetry.go
	writeJSON(w, http.StatusOK, adminSession(s))
}

func (a *admin) resumeSession(w http.ResponseWriter, r *http.Request) {
	var req struct{}
	if e := decodeBody(w, r, &req, false); e != nil {
		writeAdminError(w, e)
		return
	}
	id := r.PathValue("id")
	s, err := a.g.store.Resume(r.Context(), id)
	if err != nil {
		writeAdminError(w, a.storeFailure("resume session", err))
		return
	}
	a.g.log.Info("admin: session resumed", "session", id, "agent", s.Agent)
	a.g.audit(r.Context(), audit.Event{Kind: audit.KindResume, Session: id, Agent: s.Agent, Profile: s.Profile, Actor: "operator"}) // telemetry.go
	writeJSON(w, http.StatusOK, adminSession(s))
}

func (a *admin) revokeSession(w http.ResponseWriter, r *http.Request) {
	reason, e := requiredReason(w, r)
	if e != nil {
		writeAdminError(w, e)
		return
	}
	id := r.PathValue("id")
	s, err := a.g.store.Revoke(r.Context(), id, reason)
	if err != nil {
		if errors.Is(err, sessions.ErrNotReplicated) {
			a.g.endSession(id) // revoked on the master: stop it here all the same
		}
		writeAdminError(w, a.storeFailure("revoke session", err))
		return
	}
	// The revoke is committed; end what runs here before answering, so
	// that an acknowledged revoke leaves nothing of the session running on
	// this replica. Other replicas follow the store's event.
	a.g.endSession(id)
	a.g.log.Info("admin: session revoked", "session", id, "agent", s.Agent, "reason", reason)
	a.g.audit(r.Context(), audit.Event{Kind: audit.KindRevoke, Session: id, Agent: s.Agent, Profile: s.Profile, Actor: "operator", Reason: reason}) // telemetry.go
	writeJSON(w, http.StatusOK, adminSession(s))
}

func requiredReason(w http.ResponseWriter, r *http.Request) (string, *adminError) {
	var req ReasonRequest
	if e := decodeBody(w, r, &req, false); e != nil {
		return "", e
	}
	reason := strings.TrimSpace(req.Reason)
	if reason == "" {
		return "", badRequest(`a revoke needs a reason: send {"reason": "..."}, for example {"reason": "credential leaked"}`)
	}
	return reason, nil
}

// AgentStatus is what GET /v1/agents/{agent} shows.
type AgentStatus struct {
	Agent  string `json:"agent"`
	Locked bool   `json:"locked"`
	// Sessions are the agent's first sessions (by id), without history.
	Sessions []*AdminSession `json:"sessions"`
	// Next continues the list with GET /v1/sessions?agent=...&cursor=Next.
	Next string `json:"next,omitempty"`
}

// RevokeAgentResult is what POST /v1/agents/{agent}/revoke answers.
type RevokeAgentResult struct {
	Agent   string `json:"agent"`
	Revoked int    `json:"revoked"`
}

func agentName(r *http.Request) (string, *adminError) {
	agent := r.PathValue("agent")
	if strings.TrimSpace(agent) == "" {
		return "", badRequest("the agent id is empty: use /v1/agents/<agent>/...")
	}
	return agent, nil
}

func (a *admin) showAgent(w http.ResponseWriter, r *http.Request) {
	agent, e := agentName(r)
	if e != nil {
		writeAdminError(w, e)
		return
	}
	locked, err := a.g.store.AgentLocked(r.Context(), agent)
	if err != nil {
		writeAdminError(w, a.storeFailure("read agent lock", err))
		return
	}
	page, err := a.g.store.List(r.Context(), sessions.ListOptions{Agent: agent, Limit: agentSessionsLimit})
	if err != nil {
		writeAdminError(w, a.storeFailure("list the agent's sessions", err))
		return
	}
	out := AgentStatus{Agent: agent, Locked: locked, Sessions: make([]*AdminSession, len(page.Sessions)), Next: page.Next}
	for i, s := range page.Sessions {
		out.Sessions[i] = adminSession(s)
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *admin) revokeAgent(w http.ResponseWriter, r *http.Request) {
	agent, e := agentName(r)
	if e != nil {
		writeAdminError(w, e)
		return
	}
	reason, e := requiredReason(w, r)
	if e != nil {
		writeAdminError(w, e)
		return
	}
	n, err := a.g.store.RevokeAgent(r.Context(), agent, reason)
	if err != nil {
		writeAdminError(w, a.storeFailure("revoke the agent's sessions", err))
		return
	}
	if err := a.endAgentSessions(r.Context(), agent); err != nil {
		// The revokes are committed: every replica (this one included)
		// ends the sessions from the store's events.
		a.g.log.Warn("admin: agent revoked, but its sessions were not ended here directly", "agent", agent, "err", err)
	}
	a.g.log.Info("admin: agent revoked", "agent", agent, "sessions", n, "reason", reason)
	a.g.audit(r.Context(), audit.Event{Kind: audit.KindRevoke, Agent: agent, Actor: "operator", Reason: reason, Count: n}) // telemetry.go
	writeJSON(w, http.StatusOK, RevokeAgentResult{Agent: agent, Revoked: n})
}

// endAgentSessions ends, on this replica, the requests of every session of
// agent that is no longer active. The store's RevokeAgent does not say
// which sessions it revoked, so they are listed.
func (a *admin) endAgentSessions(ctx context.Context, agent string) error {
	cursor := ""
	for {
		page, err := a.g.store.List(ctx, sessions.ListOptions{Agent: agent, Cursor: cursor})
		if err != nil {
			return fmt.Errorf("list the agent's sessions: %w", err)
		}
		for _, s := range page.Sessions {
			if s.State != sessions.StateActive {
				a.g.endSession(s.ID)
			}
		}
		if page.Next == "" {
			return nil
		}
		cursor = page.Next
	}
}

func (a *admin) lockAgent(w http.ResponseWriter, r *http.Request)   { a.setLock(w, r, true) }
func (a *admin) unlockAgent(w http.ResponseWriter, r *http.Request) { a.setLock(w, r, false) }

func (a *admin) setLock(w http.ResponseWriter, r *http.Request, lock bool) {
	agent, e := agentName(r)
	if e != nil {
		writeAdminError(w, e)
		return
	}
	var req struct{}
	if e := decodeBody(w, r, &req, false); e != nil {
		writeAdminError(w, e)
		return
	}
	var err error
	if lock {
		err = a.g.store.LockAgent(r.Context(), agent)
	} else {
		err = a.g.store.UnlockAgent(r.Context(), agent)
	}
	if err != nil {
		writeAdminError(w, a.storeFailure("set the agent's lock", err))
		return
	}
	a.g.log.Info("admin: agent lock set", "agent", agent, "locked", lock)
	writeJSON(w, http.StatusOK, AgentStatus{Agent: agent, Locked: lock})
}

// ApprovalList is what GET /v1/approvals answers.
type ApprovalList struct {
	Approvals []PendingApproval `json:"approvals"`
}

// ResolveRequest is the optional body of approve and reject requests.
type ResolveRequest struct {
	// By names who decided, for the agent's answer and the log.
	By string `json:"by,omitempty"`
}

// ResolveResult is what approve and reject answer.
type ResolveResult struct {
	ID       string `json:"id"`
	Approved bool   `json:"approved"`
	By       string `json:"by,omitempty"`
}

func (a *admin) listApprovals(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, ApprovalList{Approvals: a.g.approve.List()})
}

func (a *admin) resolveApproval(approve bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req ResolveRequest
		if e := decodeBody(w, r, &req, false); e != nil {
			writeAdminError(w, e)
			return
		}
		id := r.PathValue("id")
		by := strings.TrimSpace(req.By)
		if err := a.g.approve.Resolve(id, approve, by); err != nil {
			if errors.Is(err, ErrNoSuchApproval) {
				writeAdminError(w, &adminError{status: http.StatusNotFound, code: "not_found",
					msg: fmt.Sprintf("approval %q is not pending here: it was decided, timed out, or is held by another replica (GET /v1/approvals lists this replica's)", id)})
				return
			}
			writeAdminError(w, &adminError{status: http.StatusInternalServerError, code: "internal", msg: "resolve approval: " + err.Error()})
			return
		}
		a.g.log.Info("admin: approval resolved", "approval", id, "approved", approve, "by", by)
		a.g.audit(r.Context(), audit.Event{Kind: audit.KindApproval, Approved: &approve, Actor: orDefault(by, "operator"), Reason: "approval " + id}) // telemetry.go
		writeJSON(w, http.StatusOK, ResolveResult{ID: id, Approved: approve, By: by})
	}
}

// PolicyStatus is what GET /v1/policies answers.
type PolicyStatus struct {
	// Configured is false when the gateway runs without policies.
	Configured bool `json:"configured"`
	// Message explains an unconfigured state.
	Message string `json:"message,omitempty"`
	*policies.Status
}

// ReloadResult is what a successful POST /v1/policies/reload answers.
type ReloadResult struct {
	// Changed is false when the files were unchanged.
	Changed bool             `json:"changed"`
	Status  *policies.Status `json:"status"`
}

const noPoliciesMessage = "no policies are configured (policies.paths in the config is empty): every call in scope is allowed"

func (a *admin) policyStatus(w http.ResponseWriter, _ *http.Request) {
	if a.policies == nil {
		writeJSON(w, http.StatusOK, PolicyStatus{Configured: false, Message: noPoliciesMessage})
		return
	}
	st := a.policies.Status()
	writeJSON(w, http.StatusOK, PolicyStatus{Configured: true, Status: &st})
}

func (a *admin) reloadPolicies(w http.ResponseWriter, r *http.Request) {
	var req struct{}
	if e := decodeBody(w, r, &req, false); e != nil {
		writeAdminError(w, e)
		return
	}
	if a.policies == nil {
		writeAdminError(w, &adminError{status: http.StatusConflict, code: "no_policies", msg: noPoliciesMessage + "; there is nothing to reload"})
		return
	}
	start := time.Now()
	changed, err := a.policies.Reload()
	if err != nil {
		e := &adminError{status: http.StatusUnprocessableEntity, code: "policy_invalid",
			msg: "the policies did not load; the previous set stays in force: " + err.Error()}
		var le *policies.LoadError
		if errors.As(err, &le) {
			for _, p := range le.Problems {
				e.problems = append(e.problems, PolicyProblem{File: p.File, Where: p.Where, Pos: p.Pos, Message: p.Message})
			}
		} else {
			e.problems = []PolicyProblem{{Message: err.Error()}}
		}
		writeAdminError(w, e)
		return
	}
	st := a.policies.Status()
	a.g.log.Info("admin: policies reloaded", "changed", changed, "version", st.Version, "took", time.Since(start))
	writeJSON(w, http.StatusOK, ReloadResult{Changed: changed, Status: &st})
}

func (a *admin) metrics(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, a.g.metrics.Snapshot())
}
