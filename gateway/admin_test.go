package gateway_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/policies"
	"github.com/toolgate/toolgate/sessions"
	"github.com/toolgate/toolgate/sessions/sessionstest"
	"github.com/toolgate/toolgate/tools"
)

const adminToken = "admin-token-for-the-tests-0123456789"

// adminKeys are the API keys of the admin tests' agents.
var adminKeys = map[string]string{
	"agent-1": "admin-test-key-of-agent-one-0123456789",
	"agent-2": "admin-test-key-of-agent-two-0123456789",
}

// adminEnv is a gateway in front of the built-in demo server, with its
// agent endpoint and its admin API each on an httptest server.
type adminEnv struct {
	gw     *gateway.Gateway
	store  sessions.Store
	url    string // agent side
	admin  string // admin API
	client *gateway.AdminClient
}

type adminEnvOptions struct {
	store    sessions.Store   // nil: memory
	policy   gateway.Policy   // nil: allow all
	policies *policies.Engine // for the admin API
}

func newAdminEnv(t *testing.T, o adminEnvOptions) *adminEnv {
	t.Helper()
	cfg := tools.Config{Servers: []tools.ServerConfig{{Name: "demo", Transport: "builtin", Builtin: "demo",
		ToolLabels: map[string][]string{"run_shell": {"destructive"}, "deploy": {"destructive"}}}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	m, err := tools.New(cfg, tools.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	auth, err := gateway.NewAuthenticator(gateway.IdentityConfig{APIKeys: []gateway.APIKeyConfig{
		{Agent: "agent-1", Profile: "default", KeyEnv: "agent-1"},
		{Agent: "agent-2", Profile: "default", KeyEnv: "agent-2"},
	}}, func(name string) (string, bool) { v, ok := adminKeys[name]; return v, ok }, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	store := o.store
	if store == nil {
		store = sessions.NewMemory(sessions.Options{})
	}
	g, err := gateway.New(gateway.Config{}, m, gateway.Options{Logger: testLogger(t), Store: store, Auth: auth,
		Policy: o.policy, Profiles: map[string]*gateway.ProfileConfig{"default": {Tools: []string{"*"}}}})
	if err != nil {
		t.Fatal(err)
	}
	g.Sync()
	watchCtx, stopWatch := context.WithCancel(context.Background())
	watched := make(chan struct{})
	go func() { defer close(watched); _ = g.Watch(watchCtx) }()
	t.Cleanup(func() { stopWatch(); <-watched })

	sum := sha256.Sum256([]byte(adminToken))
	h, err := g.AdminHandler(gateway.AdminConfig{Listen: "127.0.0.1:0", TokenSHA256: hex.EncodeToString(sum[:])},
		gateway.AdminOptions{Policies: o.policies})
	if err != nil {
		t.Fatalf("AdminHandler: %v", err)
	}
	agentTS := httptest.NewServer(g.Handler())
	t.Cleanup(agentTS.Close)
	adminTS := httptest.NewServer(h)
	t.Cleanup(adminTS.Close)
	ac, err := gateway.NewAdminClient(adminTS.URL, adminToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &adminEnv{gw: g, store: store, url: agentTS.URL, admin: adminTS.URL, client: ac}
}

// agentClient is a connected agent: protocol 2025-11-25 with a listening
// stream, so that it can be told its tools changed.
type agentClient struct {
	*client.Client
	listChanged chan struct{}
}

func (env *adminEnv) connect(t *testing.T, agent string) *agentClient {
	t.Helper()
	tr, err := transport.NewStreamableHTTP(env.url+"/mcp",
		transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer " + adminKeys[agent]}),
		transport.WithContinuousListening())
	if err != nil {
		t.Fatal(err)
	}
	return env.start(t, client.NewClient(tr, client.WithProtocolVersion(mcp.ProtocolVersion20251125)))
}

// connectSSE connects agent over the legacy SSE transport.
func (env *adminEnv) connectSSE(t *testing.T, agent string) *agentClient {
	t.Helper()
	c, err := client.NewSSEMCPClient(env.url+"/sse", client.WithHeaders(map[string]string{"Authorization": "Bearer " + adminKeys[agent]}))
	if err != nil {
		t.Fatal(err)
	}
	return env.start(t, c)
}

func (env *adminEnv) start(t *testing.T, mc *client.Client) *agentClient {
	t.Helper()
	c := &agentClient{Client: mc, listChanged: make(chan struct{}, 16)}
	c.OnNotification(func(n mcp.JSONRPCNotification) {
		if n.Method == string(mcp.MethodNotificationToolsListChanged) {
			select {
			case c.listChanged <- struct{}{}:
			default:
			}
		}
	})
	streamCtx, stopStream := context.WithCancel(context.Background())
	if err := c.Start(streamCtx); err != nil {
		stopStream()
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = c.Close(); stopStream() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	init := mcp.InitializeRequest{}
	init.Params.ClientInfo = mcp.Implementation{Name: "toolgate-admin-test", Version: "1"}
	if _, err := c.Initialize(ctx, init); err != nil {
		t.Fatalf("Initialize: %v", err)
	}
	return c
}

// call makes a tool call; a transport error becomes an error result, so
// that "refused" covers both ways a call can be refused.
func (c *agentClient) call(t *testing.T, name, args string) *mcp.CallToolResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	req := mcp.CallToolRequest{}
	req.Params.Name = name
	req.Params.Arguments = json.RawMessage(args)
	res, err := c.CallTool(ctx, req)
	if err != nil {
		return mcp.NewToolResultError("transport: " + err.Error())
	}
	return res
}

func (c *agentClient) toolNames(t *testing.T) map[string]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	list, err := c.ListTools(ctx, mcp.ListToolsRequest{})
	if err != nil {
		t.Fatalf("ListTools: %v", err)
	}
	names := map[string]bool{}
	for _, tool := range list.Tools {
		names[tool.Name] = true
	}
	return names
}

// sessionOf returns the one session of agent.
func (env *adminEnv) sessionOf(t *testing.T, agent string) *gateway.AdminSession {
	t.Helper()
	page, err := env.client.ListSessions(context.Background(), gateway.SessionFilter{Agent: agent})
	if err != nil {
		t.Fatalf("ListSessions(%s): %v", agent, err)
	}
	if len(page.Sessions) != 1 {
		t.Fatalf("ListSessions(%s) = %d sessions; want 1", agent, len(page.Sessions))
	}
	return page.Sessions[0]
}

// request sends one raw admin request and decodes the JSON answer.
func (env *adminEnv) request(t *testing.T, method, path, token, body string) (int, http.Header, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, env.admin+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatalf("%s %s answered %d with non-JSON %q", method, path, resp.StatusCode, data)
	}
	return resp.StatusCode, resp.Header, out
}

func adminStatus(err error) int {
	var e *gateway.AdminAPIError
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// waitFor polls cond until it holds or the deadline passes.
func adminWaitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestAdminAuth(t *testing.T) {
	env := newAdminEnv(t, adminEnvOptions{})
	tests := []struct {
		name   string
		token  string
		path   string
		status int
	}{
		{"no token", "", "/v1/sessions", http.StatusUnauthorized},
		{"wrong token", "not-the-admin-token-0123456789", "/v1/sessions", http.StatusUnauthorized},
		{"agent key", adminKeys["agent-1"], "/v1/sessions", http.StatusUnauthorized},
		{"no token, unknown route", "", "/v1/nope", http.StatusUnauthorized},
		{"admin token", adminToken, "/v1/sessions", http.StatusOK},
		{"admin token, unknown route", adminToken, "/v1/nope", http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, hdr, body := env.request(t, http.MethodGet, tt.path, tt.token, "")
			if status != tt.status {
				t.Errorf("GET %s = %d %v; want %d", tt.path, status, body, tt.status)
			}
			if status == http.StatusUnauthorized {
				if h := hdr.Get("WWW-Authenticate"); !strings.HasPrefix(h, "Bearer") {
					t.Errorf("WWW-Authenticate = %q; want a Bearer challenge", h)
				}
				if body["error"] != "unauthorized" || body["message"] == "" {
					t.Errorf("401 body = %v; want error and message", body)
				}
			}
		})
	}
}

func TestAdminHandlerConfig(t *testing.T) {
	env := newAdminEnv(t, adminEnvOptions{})
	env2 := map[string]string{"ADMIN_TOKEN": adminToken, "SHORT": "short"}
	lookup := func(k string) (string, bool) { v, ok := env2[k]; return v, ok }
	tests := []struct {
		name    string
		cfg     gateway.AdminConfig
		wantErr string
	}{
		{"token from env", gateway.AdminConfig{Listen: "x:1", TokenEnv: "ADMIN_TOKEN"}, ""},
		{"unset env", gateway.AdminConfig{Listen: "x:1", TokenEnv: "MISSING"}, "MISSING is not set"},
		{"short token", gateway.AdminConfig{Listen: "x:1", TokenEnv: "SHORT"}, "at least 16"},
		{"no credential", gateway.AdminConfig{Listen: "x:1"}, "no credential"},
		{"both credentials", gateway.AdminConfig{Listen: "x:1", TokenEnv: "ADMIN_TOKEN", TokenSHA256: strings.Repeat("0", 64)}, "exactly one"},
		{"bad hash", gateway.AdminConfig{Listen: "x:1", TokenSHA256: "abc"}, "64 hex digits"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := env.gw.AdminHandler(tt.cfg, gateway.AdminOptions{LookupEnv: lookup})
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("AdminHandler(%+v) = %v; want no error", tt.cfg, err)
				}
				req := httptest.NewRequest(http.MethodGet, "/v1/metrics", nil)
				req.Header.Set("Authorization", "Bearer "+adminToken)
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					t.Errorf("GET /v1/metrics with the env token = %d; want 200", rec.Code)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("AdminHandler(%+v) = %v; want an error containing %q", tt.cfg, err, tt.wantErr)
			}
		})
	}
}

func TestAdminListAndShow(t *testing.T) {
	env := newAdminEnv(t, adminEnvOptions{})
	a1 := env.connect(t, "agent-1")
	a2 := env.connect(t, "agent-2")
	if res := a1.call(t, "demo__list_files", `{}`); res.IsError {
		t.Fatalf("demo__list_files: %s", resultText(res))
	}
	_ = a2.toolNames(t)
	ctx := context.Background()

	all, err := env.client.ListSessions(ctx, gateway.SessionFilter{})
	if err != nil || len(all.Sessions) != 2 {
		t.Fatalf("ListSessions() = %+v, %v; want 2 sessions", all, err)
	}
	first, err := env.client.ListSessions(ctx, gateway.SessionFilter{Limit: 1})
	if err != nil || len(first.Sessions) != 1 || first.Next == "" {
		t.Fatalf("ListSessions(limit 1) = %+v, %v; want 1 session and a cursor", first, err)
	}
	second, err := env.client.ListSessions(ctx, gateway.SessionFilter{Limit: 1, Cursor: first.Next})
	if err != nil || len(second.Sessions) != 1 || second.Sessions[0].ID == first.Sessions[0].ID {
		t.Fatalf("ListSessions(next page) = %+v, %v; want the other session", second, err)
	}
	frozen, err := env.client.ListSessions(ctx, gateway.SessionFilter{State: "frozen"})
	if err != nil || len(frozen.Sessions) != 0 {
		t.Errorf("ListSessions(state frozen) = %+v, %v; want none", frozen, err)
	}

	s1 := env.sessionOf(t, "agent-1")
	got, err := env.client.Session(ctx, s1.ID)
	if err != nil {
		t.Fatalf("Session(%s): %v", s1.ID, err)
	}
	if got.Agent != "agent-1" || got.State != sessions.StateActive || got.Calls != 1 || len(got.Scope) != 1 || got.Expires.IsZero() {
		t.Errorf("Session(%s) = %+v; want agent-1, active, 1 call, scope, expiry", s1.ID, got.Session)
	}
	if len(got.History) != 1 || got.History[0].Name != "demo__list_files" || got.History[0].Decision != "allow" {
		t.Errorf("Session(%s).History = %+v; want the demo__list_files call, allowed", s1.ID, got.History)
	}

	bad := []struct {
		name   string
		path   string
		status int
	}{
		{"bad state", "/v1/sessions?state=sleeping", http.StatusBadRequest},
		{"bad limit", "/v1/sessions?limit=0", http.StatusBadRequest},
		{"bad cursor", "/v1/sessions?cursor=nonsense", http.StatusBadRequest},
		{"unknown parameter", "/v1/sessions?agnet=agent-1", http.StatusBadRequest},
		{"unknown session", "/v1/sessions/" + strings.Repeat("0", 32), http.StatusNotFound},
		{"malformed id", "/v1/sessions/..nope", http.StatusBadRequest},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			status, _, body := env.request(t, http.MethodGet, tt.path, adminToken, "")
			if status != tt.status || body["error"] == "" || body["message"] == "" {
				t.Errorf("GET %s = %d %v; want %d with error and message", tt.path, status, body, tt.status)
			}
		})
	}
}

func TestAdminNarrowLiveSession(t *testing.T) {
	for _, kind := range []string{"streamable-http", "sse"} {
		t.Run(kind, func(t *testing.T) { testNarrowLiveSession(t, kind) })
	}
}

func testNarrowLiveSession(t *testing.T, kind string) {
	env := newAdminEnv(t, adminEnvOptions{})
	connect := env.connect
	if kind == "sse" {
		connect = env.connectSSE
	}
	a := connect(t, "agent-1")
	if names := a.toolNames(t); !names["demo__deploy"] || !names["demo__run_shell"] {
		t.Fatalf("tools/list before narrowing = %v; want demo__deploy and demo__run_shell", names)
	}
	id := env.sessionOf(t, "agent-1").ID

	bad := []struct {
		name, body string
		status     int
	}{
		{"empty body", "", http.StatusBadRequest},
		{"nothing to remove", `{"tools":[]}`, http.StatusBadRequest},
		{"unknown field", `{"tools":["demo__deploy"],"add":["x"]}`, http.StatusBadRequest},
		{"empty tool", `{"tools":[""]}`, http.StatusBadRequest},
		{"colon", `{"tools":["label:destructive"]}`, http.StatusBadRequest},
		{"two objects", `{"tools":["demo__deploy"]}{}`, http.StatusBadRequest},
		{"case-variant key", `{"tools":["demo__read_file"],"Tools":["demo__deploy"]}`, http.StatusBadRequest},
		{"duplicate key", `{"tools":["demo__read_file"],"tools":["demo__deploy"]}`, http.StatusBadRequest},
		{"not an object", `["demo__deploy"]`, http.StatusBadRequest},
		{"too large", `{"tools":["` + strings.Repeat("x", 70<<10) + `"]}`, http.StatusRequestEntityTooLarge},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			status, _, body := env.request(t, http.MethodPost, "/v1/sessions/"+id+"/narrow", adminToken, tt.body)
			if status != tt.status || body["message"] == "" {
				t.Errorf("narrow %s = %d %v; want %d with a message", tt.body, status, body, tt.status)
			}
		})
	}
	if names := a.toolNames(t); !names["demo__deploy"] {
		t.Fatalf("refused narrowings changed tools/list: %v", names)
	}

	for len(a.listChanged) > 0 { // only the narrowing's notification counts
		<-a.listChanged
	}
	s, err := env.client.Narrow(context.Background(), id, gateway.NarrowRequest{Tools: []string{"demo__deploy"}, Labels: []string{"destructive"}})
	if err != nil {
		t.Fatalf("Narrow: %v", err)
	}
	if len(s.Removed) != 2 {
		t.Errorf("Narrow answered Removed = %v; want the tool and the label", s.Removed)
	}
	select {
	case <-a.listChanged:
	case <-time.After(10 * time.Second):
		t.Fatal("the agent never got notifications/tools/list_changed")
	}
	names := a.toolNames(t)
	if names["demo__deploy"] || names["demo__run_shell"] {
		t.Errorf("tools/list after narrowing = %v; want demo__deploy and demo__run_shell (destructive) gone", names)
	}
	if !names["demo__list_files"] {
		t.Errorf("tools/list after narrowing = %v; want demo__list_files kept", names)
	}
	for _, tool := range []string{"demo__deploy", "demo__run_shell"} {
		if res := a.call(t, tool, `{"service":"api","version":"1.2","environment":"dev"}`); !res.IsError {
			t.Errorf("call %s after narrowing = %q; want refused", tool, resultText(res))
		}
	}
	if res := a.call(t, "demo__list_files", `{}`); res.IsError {
		t.Errorf("call demo__list_files after narrowing: %s", resultText(res))
	}
}

func TestAdminFreezeResume(t *testing.T) {
	env := newAdminEnv(t, adminEnvOptions{})
	a := env.connect(t, "agent-1")
	id := env.sessionOf(t, "agent-1").ID
	ctx := context.Background()

	s, err := env.client.Freeze(ctx, id, "looks odd")
	if err != nil || s.State != sessions.StateFrozen || s.Reason != "looks odd" {
		t.Fatalf("Freeze = %+v, %v; want frozen with the reason", s, err)
	}
	if res := a.call(t, "demo__list_files", `{}`); !res.IsError {
		t.Errorf("call while frozen = %q; want refused", resultText(res))
	}
	if s, err = env.client.Resume(ctx, id); err != nil || s.State != sessions.StateActive {
		t.Fatalf("Resume = %+v, %v; want active", s, err)
	}
	if res := a.call(t, "demo__list_files", `{}`); res.IsError {
		t.Errorf("call after resume: %s", resultText(res))
	}
	if _, err := env.client.Resume(ctx, id); adminStatus(err) != http.StatusConflict {
		t.Errorf("Resume of an active session = %v; want 409", err)
	}
	if _, err := env.client.Freeze(ctx, strings.Repeat("a", 32), ""); adminStatus(err) != http.StatusNotFound {
		t.Errorf("Freeze of an unknown session = %v; want 404", err)
	}
}

func TestAdminRevokeEndsInFlightCall(t *testing.T) {
	env := newAdminEnv(t, adminEnvOptions{})
	a := env.connect(t, "agent-1")
	id := env.sessionOf(t, "agent-1").ID
	ctx := context.Background()

	type answer struct {
		res  *mcp.CallToolResult
		err  error
		took time.Duration
	}
	done := make(chan answer, 1)
	go func() {
		start := time.Now()
		cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		req := mcp.CallToolRequest{}
		req.Params.Name = "demo__slow_count"
		req.Params.Arguments = map[string]any{"n": 1000, "delay_ms": 100} // 100 s unless cancelled
		res, err := a.CallTool(cctx, req)
		done <- answer{res, err, time.Since(start)}
	}()
	// The call is committed to the session before it is forwarded.
	adminWaitFor(t, "the slow call to be admitted", func() bool {
		s, err := env.client.Session(ctx, id)
		return err == nil && s.Calls == 1
	})

	if _, err := env.client.Revoke(ctx, id, ""); adminStatus(err) != http.StatusBadRequest {
		t.Errorf("Revoke without a reason = %v; want 400", err)
	}
	s, err := env.client.Revoke(ctx, id, "credential leaked")
	if err != nil || s.State != sessions.StateRevoked || s.Reason != "credential leaked" {
		t.Fatalf("Revoke = %+v, %v; want revoked with the reason", s, err)
	}
	select {
	case ans := <-done:
		if ans.err == nil && !ans.res.IsError {
			t.Errorf("in-flight call after revoke = %q; want it cancelled", resultText(ans.res))
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the in-flight call was not cancelled by the revoke")
	}

	req, _ := http.NewRequest(http.MethodPost, env.url+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
	req.Header.Set("Authorization", "Bearer "+adminKeys["agent-1"])
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("request after revoke = %d; want 401", resp.StatusCode)
	}
	if s, err := env.client.Revoke(ctx, id, "again"); err != nil || s.Reason != "credential leaked" {
		t.Errorf("second Revoke = %+v, %v; want the first revoke kept", s, err)
	}
	if _, err := env.client.Resume(ctx, id); adminStatus(err) != http.StatusConflict {
		t.Errorf("Resume of a revoked session = %v; want 409", err)
	}
	if _, err := env.client.Narrow(ctx, id, gateway.NarrowRequest{Tools: []string{"demo__deploy"}}); adminStatus(err) != http.StatusConflict {
		t.Errorf("Narrow of a revoked session = %v; want 409", err)
	}
}

// tokenRequest asks the token endpoint for a session of agent.
func (env *adminEnv) tokenRequest(t *testing.T, agent string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, env.url+"/oauth/token", strings.NewReader(url.Values{"grant_type": {"client_credentials"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(agent, adminKeys[agent])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func TestAdminRevokeAgentAndLock(t *testing.T) {
	env := newAdminEnv(t, adminEnvOptions{})
	ctx := context.Background()
	a1 := env.connect(t, "agent-1")
	if status, body := env.tokenRequest(t, "agent-1"); status != http.StatusOK {
		t.Fatalf("token for agent-1 = %d %v; want 200", status, body)
	}
	a2 := env.connect(t, "agent-2")

	if _, err := env.client.RevokeAgent(ctx, "agent-1", " "); adminStatus(err) != http.StatusBadRequest {
		t.Errorf("RevokeAgent without a reason = %v; want 400", err)
	}
	res, err := env.client.RevokeAgent(ctx, "agent-1", "offboarded")
	if err != nil || res.Revoked != 2 {
		t.Fatalf("RevokeAgent(agent-1) = %+v, %v; want 2 sessions revoked", res, err)
	}
	if r := a1.call(t, "demo__list_files", `{}`); !r.IsError {
		t.Errorf("agent-1 call after revoke-all = %q; want refused", resultText(r))
	}
	if r := a2.call(t, "demo__list_files", `{}`); r.IsError {
		t.Errorf("agent-2 call after agent-1's revoke-all: %s", resultText(r))
	}
	st, err := env.client.Agent(ctx, "agent-1")
	if err != nil || len(st.Sessions) != 2 || st.Locked {
		t.Fatalf("Agent(agent-1) = %+v, %v; want 2 sessions, unlocked", st, err)
	}
	for _, s := range st.Sessions {
		if s.State != sessions.StateRevoked || s.Reason != "offboarded" {
			t.Errorf("agent-1 session %s = %s (%s); want revoked (offboarded)", s.ID, s.State, s.Reason)
		}
	}

	if _, err := env.client.LockAgent(ctx, "agent-2"); err != nil {
		t.Fatalf("LockAgent: %v", err)
	}
	if st, err := env.client.Agent(ctx, "agent-2"); err != nil || !st.Locked {
		t.Errorf("Agent(agent-2) after lock = %+v, %v; want locked", st, err)
	}
	if status, body := env.tokenRequest(t, "agent-2"); status == http.StatusOK {
		t.Errorf("token for locked agent-2 = %d %v; want refused", status, body)
	}
	// A lock stops new sessions; the open one goes on.
	if r := a2.call(t, "demo__list_files", `{}`); r.IsError {
		t.Errorf("agent-2's open session after lock: %s", resultText(r))
	}
	if _, err := env.client.UnlockAgent(ctx, "agent-2"); err != nil {
		t.Fatalf("UnlockAgent: %v", err)
	}
	if status, body := env.tokenRequest(t, "agent-2"); status != http.StatusOK {
		t.Errorf("token for unlocked agent-2 = %d %v; want 200", status, body)
	}
}

// approvalPolicy sends demo__deploy for approval.
const approvalPolicy = `rules:
  - id: deploy-needs-approval
    match: {tools: [demo__deploy]}
    action: require_approval
    message: Deploys wait for an operator.
`

func TestAdminApprovals(t *testing.T) {
	set, err := policies.Compile([]policies.SourceFile{{Name: "approve.yaml", Data: []byte(approvalPolicy)}}, policies.Options{})
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	env := newAdminEnv(t, adminEnvOptions{policy: set})
	a := env.connect(t, "agent-1")
	ctx := context.Background()

	for _, tt := range []struct {
		name     string
		approve  bool
		by       string
		wantText string
	}{
		{"approve", true, "alice", `"service"`},
		{"reject", false, "bob", "rejected by bob"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			done := make(chan *mcp.CallToolResult, 1)
			go func() {
				done <- a.call(t, "demo__deploy", `{"service":"api","version":"1.2","environment":"dev"}`)
			}()
			var pending []gateway.PendingApproval
			adminWaitFor(t, "the call to wait for approval", func() bool {
				list, err := env.client.Approvals(ctx)
				if err != nil {
					t.Fatalf("Approvals: %v", err)
				}
				pending = list.Approvals
				return len(pending) == 1
			})
			p := pending[0]
			if p.Tool != "demo__deploy" || p.Agent != "agent-1" || p.Rule != "deploy-needs-approval" {
				t.Errorf("pending approval = %+v; want demo__deploy of agent-1 by rule deploy-needs-approval", p)
			}
			select {
			case res := <-done:
				t.Fatalf("the call answered before a decision: %q", resultText(res))
			default:
			}
			if _, err := env.client.Resolve(ctx, p.ID, tt.approve, tt.by); err != nil {
				t.Fatalf("Resolve(%s): %v", p.ID, err)
			}
			select {
			case res := <-done:
				if res.IsError == tt.approve || !strings.Contains(resultText(res), tt.wantText) {
					t.Errorf("call after %s = error %v %q; want error %v containing %q", tt.name, res.IsError, resultText(res), !tt.approve, tt.wantText)
				}
			case <-time.After(15 * time.Second):
				t.Fatalf("the call did not finish after %s", tt.name)
			}
			if _, err := env.client.Resolve(ctx, p.ID, true, ""); adminStatus(err) != http.StatusNotFound {
				t.Errorf("Resolve of a decided approval = %v; want 404", err)
			}
		})
	}
}

const denyDeployPolicy = `rules:
  - id: no-deploy
    match: {tools: [demo__deploy]}
    action: deny
    message: No deploys today.
`

func TestAdminPolicyReload(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "p.yaml")
	if err := os.WriteFile(file, []byte(denyDeployPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	engine, err := policies.NewEngine([]string{dir}, policies.EngineOptions{})
	if err != nil {
		t.Fatal(err)
	}
	env := newAdminEnv(t, adminEnvOptions{policy: engine, policies: engine})
	a := env.connect(t, "agent-1")
	ctx := context.Background()
	const deployArgs = `{"service":"api","version":"1.2","environment":"dev"}`

	st, err := env.client.PolicyStatus(ctx)
	if err != nil || !st.Configured || st.Status == nil || st.Version == "" || len(st.Files) != 1 || st.Rules != 1 {
		t.Fatalf("PolicyStatus = %+v, %v; want configured, 1 file, 1 rule", st, err)
	}
	version := st.Version

	if err := os.WriteFile(file, []byte("rules:\n  - {id: broken, when: 'cal.x', action: deny, message: m}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	status, _, body := env.request(t, http.MethodPost, "/v1/policies/reload", adminToken, "")
	problems, _ := body["problems"].([]any)
	if status != http.StatusUnprocessableEntity || body["error"] != "policy_invalid" || len(problems) == 0 ||
		!strings.Contains(body["message"].(string), "cal") {
		t.Fatalf("reload of a broken file = %d %v; want 422 listing the problem", status, body)
	}
	if p, _ := problems[0].(map[string]any); p["file"] != file {
		t.Errorf("problem = %v; want it to name %s", p, file)
	}
	if _, err := env.client.ReloadPolicies(ctx); adminStatus(err) != http.StatusUnprocessableEntity || !strings.Contains(err.Error(), file) {
		t.Errorf("ReloadPolicies() = %v; want a 422 naming the file", err)
	}
	st, err = env.client.PolicyStatus(ctx)
	if err != nil || st.Version != version || st.LastError == "" {
		t.Errorf("PolicyStatus after a failed reload = %+v, %v; want version %s kept and the error shown", st, err, version)
	}
	if res := a.call(t, "demo__deploy", deployArgs); !res.IsError || !strings.Contains(resultText(res), "No deploys today") {
		t.Errorf("demo__deploy after a failed reload = %q; want the old rule to deny it", resultText(res))
	}

	if err := os.WriteFile(file, []byte("rules: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rr, err := env.client.ReloadPolicies(ctx)
	if err != nil || !rr.Changed || rr.Status.Version == version || rr.Status.LastError != "" {
		t.Fatalf("ReloadPolicies() after the fix = %+v, %v; want a new version", rr, err)
	}
	if res := a.call(t, "demo__deploy", deployArgs); res.IsError {
		t.Errorf("demo__deploy after the new set: %s", resultText(res))
	}
}

func TestAdminNoPolicies(t *testing.T) {
	env := newAdminEnv(t, adminEnvOptions{})
	st, err := env.client.PolicyStatus(context.Background())
	if err != nil || st.Configured || !strings.Contains(st.Message, "no policies") {
		t.Errorf("PolicyStatus = %+v, %v; want not configured, saying so", st, err)
	}
	if _, err := env.client.ReloadPolicies(context.Background()); adminStatus(err) != http.StatusConflict {
		t.Errorf("ReloadPolicies without policies = %v; want 409", err)
	}
}

func TestAdminMetrics(t *testing.T) {
	env := newAdminEnv(t, adminEnvOptions{})
	a := env.connect(t, "agent-1")
	for i := 0; i < 3; i++ {
		a.call(t, "demo__list_files", `{}`)
	}
	m, err := env.client.Metrics(context.Background())
	if err != nil || m.Decisions[policies.ActionAllow] != 3 {
		t.Errorf("Metrics = %+v, %v; want 3 allowed", m, err)
	}
}

// TestAdminRedisStore runs the session routes over the Redis store, then
// stops Redis to see the admin API answer 503 and recover.
func TestAdminRedisStore(t *testing.T) {
	srv := sessionstest.StartRedis(t)
	if !srv.Own {
		t.Skip("needs a redis-server of its own to stop")
	}
	store := sessions.NewRedis(srv.Client(), sessions.RedisOptions{Prefix: sessionstest.Prefix()})
	env := newAdminEnv(t, adminEnvOptions{store: store})
	a := env.connect(t, "agent-1")
	ctx := context.Background()
	id := env.sessionOf(t, "agent-1").ID

	if _, err := env.client.Narrow(ctx, id, gateway.NarrowRequest{Tools: []string{"demo__deploy"}}); err != nil {
		t.Fatalf("Narrow over Redis: %v", err)
	}
	select {
	case <-a.listChanged:
	case <-time.After(10 * time.Second):
		t.Fatal("no notifications/tools/list_changed after narrowing over Redis")
	}
	if names := a.toolNames(t); names["demo__deploy"] || !names["demo__list_files"] {
		t.Errorf("tools/list after narrowing over Redis = %v; want demo__deploy gone, demo__list_files kept", names)
	}
	if _, err := env.client.Revoke(ctx, id, "done"); err != nil {
		t.Fatalf("Revoke over Redis: %v", err)
	}
	if r := a.call(t, "demo__list_files", `{}`); !r.IsError {
		t.Errorf("call after revoke over Redis = %q; want refused", resultText(r))
	}

	var once sync.Once
	restart := func() { once.Do(srv.Start) }
	srv.Stop()
	t.Cleanup(restart)
	for _, path := range []string{"/v1/sessions", "/v1/sessions/" + id, "/v1/agents/agent-1"} {
		status, hdr, body := env.request(t, http.MethodGet, path, adminToken, "")
		if status != http.StatusServiceUnavailable || body["error"] != "store_unavailable" || hdr.Get("Retry-After") == "" {
			t.Errorf("GET %s with Redis down = %d %v; want 503 store_unavailable", path, status, body)
		}
	}
	restart()
	// The restarted server kept nothing (no persistence): the list is
	// empty, but it answers.
	adminWaitFor(t, "the store to answer again", func() bool {
		_, err := env.client.ListSessions(ctx, gateway.SessionFilter{})
		return err == nil
	})
}

// TestAdminRevokeNotReplicated: a store that must have a revoke confirmed by
// a Redis replica, and has none, answers the operator with a clear refusal;
// the session is revoked on the master all the same and refuses calls.
func TestAdminRevokeNotReplicated(t *testing.T) {
	srv := sessionstest.StartRedis(t)
	store := sessions.NewRedis(srv.Client(), sessions.RedisOptions{Prefix: sessionstest.Prefix(),
		Wait: sessions.WaitOptions{Replicas: 1, Timeout: 50 * time.Millisecond}})
	env := newAdminEnv(t, adminEnvOptions{store: store})
	a := env.connect(t, "agent-1")
	id := env.sessionOf(t, "agent-1").ID
	_, err := env.client.Revoke(context.Background(), id, "leaked")
	var apiErr *gateway.AdminAPIError
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusServiceUnavailable || apiErr.AdminErrorBody.Error != "not_replicated" {
		t.Fatalf("Revoke without a confirming replica = %v; want 503 not_replicated", err)
	}
	if r := a.call(t, "demo__list_files", `{}`); !r.IsError {
		t.Error("a call went through after a revoke the replicas did not confirm; want it refused")
	}
}
