package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// AdminClient calls the admin API of a running gateway; the toolgate CLI
// is built on it.
type AdminClient struct {
	base  string
	token string
	hc    *http.Client
}

// NewAdminClient returns a client of the admin API at baseURL
// ("http://127.0.0.1:8081") presenting token. hc nil: http.DefaultClient.
func NewAdminClient(baseURL, token string, hc *http.Client) (*AdminClient, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("admin URL %q: want an http or https URL such as http://127.0.0.1:8081", baseURL)
	}
	if hc == nil {
		hc = http.DefaultClient
	}
	return &AdminClient{base: strings.TrimSuffix(baseURL, "/"), token: token, hc: hc}, nil
}

// AdminAPIError is an error answer of the admin API.
type AdminAPIError struct {
	Status int // HTTP status
	AdminErrorBody
}

func (e *AdminAPIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s (HTTP %d)", e.Message, e.Status)
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		for _, s := range []string{p.File, p.Where, p.Pos} {
			if s != "" {
				b.WriteString(s + ": ")
			}
		}
		b.WriteString(p.Message)
	}
	return b.String()
}

// do sends one request; in, when not nil, is the JSON body; out, when not
// nil, receives the JSON answer.
func (c *AdminClient) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		e := &AdminAPIError{Status: resp.StatusCode}
		if json.Unmarshal(data, &e.AdminErrorBody) != nil || e.Message == "" {
			e.AdminErrorBody.Error, e.Message = "http_"+strconv.Itoa(resp.StatusCode), strings.TrimSpace(string(data))
			if e.Message == "" {
				e.Message = http.StatusText(resp.StatusCode)
			}
		}
		return e
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// SessionFilter selects the sessions ListSessions returns.
type SessionFilter struct {
	Agent  string
	State  string
	Limit  int
	Cursor string
}

// ListSessions returns one page of sessions.
func (c *AdminClient) ListSessions(ctx context.Context, f SessionFilter) (*SessionPage, error) {
	q := url.Values{}
	if f.Agent != "" {
		q.Set("agent", f.Agent)
	}
	if f.State != "" {
		q.Set("state", f.State)
	}
	if f.Limit != 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	if f.Cursor != "" {
		q.Set("cursor", f.Cursor)
	}
	path := "/v1/sessions"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out SessionPage
	return &out, c.do(ctx, http.MethodGet, path, nil, &out)
}

func sessionPath(id, action string) string {
	p := "/v1/sessions/" + url.PathEscape(id)
	if action != "" {
		p += "/" + action
	}
	return p
}

// Session returns one session with its history.
func (c *AdminClient) Session(ctx context.Context, id string) (*AdminSession, error) {
	var out AdminSession
	return &out, c.do(ctx, http.MethodGet, sessionPath(id, ""), nil, &out)
}

// Narrow removes tools from a session.
func (c *AdminClient) Narrow(ctx context.Context, id string, req NarrowRequest) (*AdminSession, error) {
	var out AdminSession
	return &out, c.do(ctx, http.MethodPost, sessionPath(id, "narrow"), req, &out)
}

// Freeze stops a session from admitting calls until Resume.
func (c *AdminClient) Freeze(ctx context.Context, id, reason string) (*AdminSession, error) {
	var out AdminSession
	return &out, c.do(ctx, http.MethodPost, sessionPath(id, "freeze"), ReasonRequest{Reason: reason}, &out)
}

// Resume makes a frozen session active again.
func (c *AdminClient) Resume(ctx context.Context, id string) (*AdminSession, error) {
	var out AdminSession
	return &out, c.do(ctx, http.MethodPost, sessionPath(id, "resume"), nil, &out)
}

// Revoke ends a session for good.
func (c *AdminClient) Revoke(ctx context.Context, id, reason string) (*AdminSession, error) {
	var out AdminSession
	return &out, c.do(ctx, http.MethodPost, sessionPath(id, "revoke"), ReasonRequest{Reason: reason}, &out)
}

func agentPath(agent, action string) string {
	p := "/v1/agents/" + url.PathEscape(agent)
	if action != "" {
		p += "/" + action
	}
	return p
}

// Agent returns an agent's lock and first sessions.
func (c *AdminClient) Agent(ctx context.Context, agent string) (*AgentStatus, error) {
	var out AgentStatus
	return &out, c.do(ctx, http.MethodGet, agentPath(agent, ""), nil, &out)
}

// RevokeAgent revokes every live session of an agent.
func (c *AdminClient) RevokeAgent(ctx context.Context, agent, reason string) (*RevokeAgentResult, error) {
	var out RevokeAgentResult
	return &out, c.do(ctx, http.MethodPost, agentPath(agent, "revoke"), ReasonRequest{Reason: reason}, &out)
}

// LockAgent stops an agent from opening sessions; UnlockAgent lets it again.
func (c *AdminClient) LockAgent(ctx context.Context, agent string) (*AgentStatus, error) {
	var out AgentStatus
	return &out, c.do(ctx, http.MethodPost, agentPath(agent, "lock"), nil, &out)
}

// UnlockAgent lets a locked agent open sessions again.
func (c *AdminClient) UnlockAgent(ctx context.Context, agent string) (*AgentStatus, error) {
	var out AgentStatus
	return &out, c.do(ctx, http.MethodPost, agentPath(agent, "unlock"), nil, &out)
}

// Approvals lists the calls waiting for approval on the gateway.
func (c *AdminClient) Approvals(ctx context.Context) (*ApprovalList, error) {
	var out ApprovalList
	return &out, c.do(ctx, http.MethodGet, "/v1/approvals", nil, &out)
}

// Resolve approves or rejects a waiting call; by names who decided.
func (c *AdminClient) Resolve(ctx context.Context, id string, approve bool, by string) (*ResolveResult, error) {
	action := "reject"
	if approve {
		action = "approve"
	}
	var out ResolveResult
	return &out, c.do(ctx, http.MethodPost, "/v1/approvals/"+url.PathEscape(id)+"/"+action, ResolveRequest{By: by}, &out)
}

// PolicyStatus returns the live policy set's status.
func (c *AdminClient) PolicyStatus(ctx context.Context) (*PolicyStatus, error) {
	var out PolicyStatus
	return &out, c.do(ctx, http.MethodGet, "/v1/policies", nil, &out)
}

// ReloadPolicies reloads the policy files; on failure the error is an
// *AdminAPIError listing the problems, and the old set stays.
func (c *AdminClient) ReloadPolicies(ctx context.Context) (*ReloadResult, error) {
	var out ReloadResult
	return &out, c.do(ctx, http.MethodPost, "/v1/policies/reload", nil, &out)
}

// Metrics returns the gateway's counters.
func (c *AdminClient) Metrics(ctx context.Context) (*MetricsSnapshot, error) {
	var out MetricsSnapshot
	return &out, c.do(ctx, http.MethodGet, "/v1/metrics", nil, &out)
}
