package gateway_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/redis/go-redis/v9"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/policies"
	"github.com/toolgate/toolgate/sessions"
	"github.com/toolgate/toolgate/sessions/sessionstest"
	"github.com/toolgate/toolgate/tools"
)

// replica is one gateway in front of the demo server and, optionally, a
// shared HTTP upstream.
type replica struct {
	gw  *gateway.Gateway
	url string
}

type replicaOpts struct {
	store    sessions.Store
	profiles map[string]*gateway.ProfileConfig
	policy   string // inline policy YAML; empty: none
	now      func() time.Time
	upstream string        // URL of an extra streamable-http upstream named "web"
	timeout  time.Duration // per call to "web"; zero: 10s
}

func defaultProfiles() map[string]*gateway.ProfileConfig {
	return map[string]*gateway.ProfileConfig{
		"default": {Tools: []string{"*"}},
		"reader":  {Tools: []string{"demo__list_files", "demo__read_file"}},
		"strict":  {Tools: []string{"demo__list_files"}, OutOfScope: "revoke"},
	}
}

func startReplica(t *testing.T, o replicaOpts) *replica {
	t.Helper()
	if o.store == nil {
		o.store = sessions.NewMemory(sessions.Options{})
	}
	if o.profiles == nil {
		o.profiles = defaultProfiles()
	}
	servers := []tools.ServerConfig{{Name: "demo", Transport: "builtin", Builtin: "demo"}}
	if o.upstream != "" {
		if o.timeout == 0 {
			o.timeout = 10 * time.Second
		}
		servers = append(servers, tools.ServerConfig{Name: "web", Transport: "streamable-http", URL: o.upstream, Timeout: o.timeout})
	}
	cfg := tools.Config{Servers: servers}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	m, err := tools.New(cfg, tools.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	auth, err := gateway.NewAuthenticator(gateway.IdentityConfig{APIKeys: []gateway.APIKeyConfig{
		{Agent: "agent-1", Profile: "default", KeyEnv: "KEY1"},
		{Agent: "agent-2", Profile: "default", KeyEnv: "KEY2"},
		{Agent: "reader", Profile: "reader", KeyEnv: "KEY_READER"},
		{Agent: "strict", Profile: "strict", KeyEnv: "KEY_STRICT"},
	}}, func(name string) (string, bool) { v, ok := sessionKeys[name]; return v, ok }, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var policy gateway.Policy
	if o.policy != "" {
		set, err := policies.Compile([]policies.SourceFile{{Name: "test.yaml", Data: []byte(o.policy)}}, policies.Options{})
		if err != nil {
			t.Fatal(err)
		}
		policy = set
	}
	g, err := gateway.New(gateway.Config{}, m, gateway.Options{Store: o.store, Auth: auth, Profiles: o.profiles,
		Policy: policy, Now: o.now, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	g.Sync()
	watchCtx, stopWatch := context.WithCancel(context.Background())
	go func() { _ = g.Watch(watchCtx) }()
	t.Cleanup(stopWatch)
	ts := httptest.NewServer(g.Handler())
	t.Cleanup(ts.Close)
	return &replica{gw: g, url: ts.URL}
}

var sessionKeys = map[string]string{
	"KEY1":       "key-of-agent-one-0123456789",
	"KEY2":       "key-of-agent-two-0123456789",
	"KEY_READER": "key-of-the-reader-0123456789",
	"KEY_STRICT": "key-of-the-strict-0123456789",
}

// tokenRequest posts a client-credentials request; auth is "basic" or "post".
func tokenRequest(t *testing.T, base, agent, secret, auth string, extra url.Values) (int, map[string]any, http.Header) {
	t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}}
	for k, v := range extra {
		form[k] = v
	}
	if auth == "post" {
		form.Set("client_id", agent)
		form.Set("client_secret", secret)
	}
	req, _ := http.NewRequest(http.MethodPost, base+"/oauth/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if auth == "basic" {
		req.SetBasicAuth(url.QueryEscape(agent), url.QueryEscape(secret))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("token endpoint answered non-JSON: %v", err)
	}
	return resp.StatusCode, body, resp.Header
}

func mintToken(t *testing.T, base, agent, key string, scope string) string {
	t.Helper()
	extra := url.Values{}
	if scope != "" {
		extra.Set("scope", scope)
	}
	status, body, _ := tokenRequest(t, base, agent, key, "basic", extra)
	if status != 200 {
		t.Fatalf("token request for %s = %d %v", agent, status, body)
	}
	return body["access_token"].(string)
}

// mcpClient connects with a bearer token; version "" is the newest.
func mcpClient(t *testing.T, base, token, version string, onNote func(mcp.JSONRPCNotification)) (*client.Client, error) {
	t.Helper()
	opts := []transport.StreamableHTTPCOption{transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer " + token})}
	var copts []client.ClientOption
	if version != "" {
		opts = append(opts, transport.WithContinuousListening())
		copts = append(copts, client.WithProtocolVersion(version))
	}
	tr, err := transport.NewStreamableHTTP(base+"/mcp", opts...)
	if err != nil {
		return nil, err
	}
	c := client.NewClient(tr, copts...)
	if onNote != nil {
		c.OnNotification(onNote)
	}
	streamCtx, stop := context.WithCancel(context.Background())
	t.Cleanup(func() { _ = c.Close(); stop() })
	if err := c.Start(streamCtx); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Initialize(ctx, mcp.InitializeRequest{}); err != nil {
		return nil, err
	}
	return c, nil
}

func listNames(t *testing.T, c *client.Client) map[string]bool {
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

func callTool(c *client.Client, name, args string) (*mcp.CallToolResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := mcp.CallToolRequest{}
	req.Params.Name = name
	req.Params.Arguments = json.RawMessage(args)
	return c.CallTool(ctx, req)
}

func rawPost(t *testing.T, base, token, body string, header map[string]string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/mcp", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func TestTokenEndpoint(t *testing.T) {
	r := startReplica(t, replicaOpts{})
	key := sessionKeys["KEY1"]
	tests := []struct {
		name      string
		agent     string
		secret    string
		auth      string
		extra     url.Values
		status    int
		errorCode string
	}{
		{"basic", "agent-1", key, "basic", nil, 200, ""},
		{"post", "agent-1", key, "post", nil, 200, ""},
		{"narrower scope", "agent-1", key, "basic", url.Values{"scope": {"demo__sign_*"}}, 200, ""},
		{"wrong secret", "agent-1", "nope", "basic", nil, 401, "invalid_client"},
		{"another agent's key", "agent-2", key, "basic", nil, 401, "invalid_client"},
		{"no client auth", "", "", "none", nil, 401, "invalid_client"},
		{"unsupported grant", "agent-1", key, "basic", url.Values{"grant_type": {"password"}}, 400, "unsupported_grant_type"},
		{"scope beyond profile", "reader", sessionKeys["KEY_READER"], "basic", url.Values{"scope": {"demo__deploy"}}, 400, "invalid_scope"},
		{"repeated parameter", "agent-1", key, "basic", url.Values{"scope": {"a", "b"}}, 400, "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body, hdr := tokenRequest(t, r.url, tt.agent, tt.secret, tt.auth, tt.extra)
			if status != tt.status || (tt.errorCode != "" && body["error"] != tt.errorCode) {
				t.Fatalf("token request = %d %v; want %d %q", status, body, tt.status, tt.errorCode)
			}
			if hdr.Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control = %q; want no-store", hdr.Get("Cache-Control"))
			}
			if status == 200 {
				if body["token_type"] != "Bearer" || body["access_token"] == "" || body["expires_in"].(float64) <= 0 {
					t.Errorf("token response = %v; want a Bearer token with expires_in", body)
				}
				if sc := tt.extra.Get("scope"); sc != "" && body["scope"] != sc {
					t.Errorf("granted scope = %v; want %q", body["scope"], sc)
				}
			}
		})
	}

	// A narrowed session sees only its scope.
	token := mintToken(t, r.url, "agent-1", key, "demo__sign_* demo__list_files")
	c, err := mcpClient(t, r.url, token, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	names := listNames(t, c)
	if len(names) != 2 || !names["demo__sign_artifact"] || !names["demo__list_files"] {
		t.Errorf("tools/list of a session narrowed at mint = %v; want only demo__sign_artifact and demo__list_files", names)
	}
	res, err := callTool(c, "demo__read_secret", `{"name":"any"}`)
	if err != nil || !res.IsError || !strings.Contains(resultText(res), "outside this session's scope") {
		t.Errorf("call outside the minted scope = %+v, %v; want a refusal", res, err)
	}
}

func TestDiscoveryMetadata(t *testing.T) {
	r := startReplica(t, replicaOpts{})
	resp, _ := rawPost(t, r.url, "", `{"jsonrpc":"2.0","id":1,"method":"ping"}`, nil)
	challenge := resp.Header.Get("WWW-Authenticate")
	if resp.StatusCode != 401 || !strings.Contains(challenge, `resource_metadata="`) {
		t.Fatalf("unauthenticated POST /mcp = %d, WWW-Authenticate %q; want 401 with resource_metadata", resp.StatusCode, challenge)
	}
	metaURL := challenge[strings.Index(challenge, `resource_metadata="`)+len(`resource_metadata="`):]
	metaURL = metaURL[:strings.IndexByte(metaURL, '"')]
	get := func(u string) map[string]any {
		t.Helper()
		u = strings.Replace(u, "http://127.0.0.1:8080", r.url, 1) // the default public URL
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&m) != nil {
			t.Fatalf("GET %s = %d; want JSON", u, resp.StatusCode)
		}
		return m
	}
	prm := get(metaURL)
	servers, _ := prm["authorization_servers"].([]any)
	if len(servers) != 1 || !strings.HasSuffix(prm["resource"].(string), "/mcp") {
		t.Fatalf("protected-resource metadata = %v", prm)
	}
	as := get(servers[0].(string) + "/.well-known/oauth-authorization-server")
	if !strings.HasSuffix(as["token_endpoint"].(string), "/oauth/token") {
		t.Fatalf("authorization-server metadata = %v", as)
	}
	grants, _ := as["grant_types_supported"].([]any)
	if len(grants) != 1 || grants[0] != "client_credentials" {
		t.Errorf("grant_types_supported = %v; want [client_credentials]", grants)
	}
}

func TestRefusedTokens(t *testing.T) {
	store := sessions.NewMemory(sessions.Options{})
	r := startReplica(t, replicaOpts{store: store})
	token := mintToken(t, r.url, "agent-1", sessionKeys["KEY1"], "")
	ping := `{"jsonrpc":"2.0","id":1,"method":"ping"}`
	modern := map[string]string{"MCP-Protocol-Version": mcp.ProtocolVersion20260728, "Mcp-Method": "tools/list"}
	if resp, body := rawPost(t, r.url, token, pingModern(), modern); resp.StatusCode != 200 {
		t.Fatalf("ping with a fresh token = %d %s; want 200", resp.StatusCode, body)
	}
	sess, err := store.LookupToken(context.Background(), sessions.HashToken(token))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Revoke(context.Background(), sess.ID, "leaked"); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ name, token string }{
		{"revoked token replayed", token},
		{"unknown token", "tgs_not-a-token"},
		{"missing token", ""},
		{"wrong agent key", "key-of-nobody-0123456789"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := rawPost(t, r.url, tt.token, ping, modern)
			if resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer ") {
				t.Errorf("POST with %s = %d %s, WWW-Authenticate %q; want 401 with a Bearer challenge",
					tt.name, resp.StatusCode, body, resp.Header.Get("WWW-Authenticate"))
			}
		})
	}
}

// pingModern is a 2026-07-28 request that needs no transport session
// (that revision has no ping); send it with modernHeaders.
func pingModern() string {
	return `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"t","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}}}`
}

// TestTransportSessionBelongsToItsAgent: a token of one agent presented on
// the MCP session another agent opened is refused.
func TestTransportSessionBelongsToItsAgent(t *testing.T) {
	r := startReplica(t, replicaOpts{})
	tok1 := mintToken(t, r.url, "agent-1", sessionKeys["KEY1"], "")
	tok2 := mintToken(t, r.url, "agent-2", sessionKeys["KEY2"], "")
	c1, err := mcpClient(t, r.url, tok1, mcp.ProtocolVersion20251125, nil)
	if err != nil {
		t.Fatal(err)
	}
	mcpSession := c1.GetSessionId()
	if mcpSession == "" {
		t.Fatal("no Mcp-Session-Id for a 2025-11-25 client")
	}
	list := `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`
	hdr := map[string]string{"Mcp-Session-Id": mcpSession, "MCP-Protocol-Version": mcp.ProtocolVersion20251125}
	if resp, body := rawPost(t, r.url, tok2, list, hdr); resp.StatusCode != 403 {
		t.Errorf("agent-2's token on agent-1's MCP session = %d %s; want 403", resp.StatusCode, body)
	}
	if resp, body := rawPost(t, r.url, tok1, list, hdr); resp.StatusCode != 200 {
		t.Errorf("agent-1's token on its own MCP session = %d %s; want 200", resp.StatusCode, body)
	}
	// An agent credential is not a way into another agent's session either.
	if resp, body := rawPost(t, r.url, sessionKeys["KEY2"], list, hdr); resp.StatusCode != 403 {
		t.Errorf("agent-2's key on agent-1's MCP session = %d %s; want 403", resp.StatusCode, body)
	}
}

func TestImplicitSession(t *testing.T) {
	store := sessions.NewMemory(sessions.Options{})
	r := startReplica(t, replicaOpts{store: store})
	c, err := mcpClient(t, r.url, sessionKeys["KEY1"], "", nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if res, err := callTool(c, "demo__list_files", `{}`); err != nil || res.IsError {
			t.Fatalf("call %d with an agent key = %+v, %v", i, res, err)
		}
	}
	page, err := store.List(context.Background(), sessions.ListOptions{Agent: "agent-1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Sessions) != 1 || page.Sessions[0].Calls != 3 {
		t.Fatalf("sessions of agent-1 = %+v; want one implicit session with 3 calls", page.Sessions)
	}
	// A revoked implicit session is not reopened by presenting the key again.
	if _, err := store.Revoke(context.Background(), page.Sessions[0].ID, "test"); err != nil {
		t.Fatal(err)
	}
	resp, body := rawPost(t, r.url, sessionKeys["KEY1"], pingModern(), map[string]string{"MCP-Protocol-Version": mcp.ProtocolVersion20260728, "Mcp-Method": "tools/list"})
	if resp.StatusCode != 401 {
		t.Errorf("agent key after its implicit session was revoked = %d %s; want 401", resp.StatusCode, body)
	}
}

const testPolicy = `
rules:
  - id: no-prod-shell
    when: call.name == "demo__run_shell" && call.args.command.contains("rm -rf")
    action: revoke
    message: Destructive shell commands end the session.
  - id: no-secrets
    match:
      labels: [credential]
    when: "true"
    action: deny
    message: Secrets are not for agents.
`

func TestPolicyDecisionsReachTheAgent(t *testing.T) {
	store := sessions.NewMemory(sessions.Options{})
	r := startReplica(t, replicaOpts{store: store, policy: testPolicy})
	token := mintToken(t, r.url, "agent-1", sessionKeys["KEY1"], "")
	c, err := mcpClient(t, r.url, token, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	// Labels come from the tools config; this replica labels nothing, so
	// the credential rule does not fire and the secret read goes through.
	if res, err := callTool(c, "demo__list_files", `{}`); err != nil || res.IsError {
		t.Fatalf("allowed call = %+v, %v", res, err)
	}
	res, err := callTool(c, "demo__run_shell", `{"command":"rm -rf /"}`)
	if err != nil || !res.IsError || resultText(res) != "Destructive shell commands end the session." {
		t.Fatalf("revoking call = %+v, %v; want the rule's message", res, err)
	}
	sess, err := store.LookupToken(context.Background(), sessions.HashToken(token))
	if sess == nil || sess.State != sessions.StateRevoked {
		t.Fatalf("session after a revoke rule = %+v, %v; want revoked", sess, err)
	}
	if _, err := callTool(c, "demo__list_files", `{}`); err == nil {
		t.Error("a call after the revoke went through; want the token refused")
	}
}

func TestOutOfScope(t *testing.T) {
	store := sessions.NewMemory(sessions.Options{})
	r := startReplica(t, replicaOpts{store: store})
	for _, tt := range []struct {
		agent, key string
		state      sessions.State
	}{
		{"reader", sessionKeys["KEY_READER"], sessions.StateActive},
		{"strict", sessionKeys["KEY_STRICT"], sessions.StateRevoked},
	} {
		t.Run(tt.agent, func(t *testing.T) {
			token := mintToken(t, r.url, tt.agent, tt.key, "")
			c, err := mcpClient(t, r.url, token, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			if names := listNames(t, c); names["demo__deploy"] {
				t.Errorf("tools/list shows demo__deploy outside the scope")
			}
			res, err := callTool(c, "demo__deploy", `{"service":"api","version":"1.0","environment":"prod"}`)
			if err != nil || !res.IsError {
				t.Fatalf("out-of-scope call = %+v, %v; want refused", res, err)
			}
			sess, _ := store.LookupToken(context.Background(), sessions.HashToken(token))
			if sess.State != tt.state || sess.Denied != 1 {
				t.Errorf("session after an out-of-scope call = %s with %d denied; want %s with 1", sess.State, sess.Denied, tt.state)
			}
		})
	}
}

// TestWindowEndsLiveSession: a session opened inside a maintenance window
// ends when the window closes, by the reaper's timer, and its open stream
// is closed.
func TestWindowEndsLiveSession(t *testing.T) {
	start := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	clock := sessionstest.NewClock(start)
	store := sessions.NewMemory(sessions.Options{Clock: clock})
	profiles := map[string]*gateway.ProfileConfig{"default": {Tools: []string{"*"}, Lifetime: 8 * time.Hour,
		Windows: &gateway.WindowsConfig{Maintenance: []gateway.MaintenanceWindow{{Start: start.Add(-time.Hour), End: start.Add(30 * time.Minute)}}}}}
	r := startReplica(t, replicaOpts{store: store, profiles: profiles, now: clock.Now})
	token := mintToken(t, r.url, "agent-1", sessionKeys["KEY1"], "")
	sess, err := store.LookupToken(context.Background(), sessions.HashToken(token))
	if err != nil {
		t.Fatal(err)
	}
	if want := start.Add(30 * time.Minute); !sess.Expires.Equal(want) {
		t.Fatalf("session expires %v; want the window's end %v", sess.Expires, want)
	}
	c, err := mcpClient(t, r.url, token, mcp.ProtocolVersion20251125, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := callTool(c, "demo__list_files", `{}`); err != nil || res.IsError {
		t.Fatalf("call inside the window = %+v, %v", res, err)
	}
	// An open stream of the session, read until it ends.
	streamReq, _ := http.NewRequest(http.MethodGet, r.url+"/mcp", nil)
	streamReq.Header.Set("Authorization", "Bearer "+token)
	streamReq.Header.Set("Accept", "text/event-stream")
	streamReq.Header.Set("Mcp-Session-Id", c.GetSessionId())
	streamReq.Header.Set("MCP-Protocol-Version", mcp.ProtocolVersion20251125)
	streamResp, err := http.DefaultClient.Do(streamReq)
	if err != nil || streamResp.StatusCode != 200 {
		t.Fatalf("GET stream = %v, %v", streamResp, err)
	}
	streamEnded := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, streamResp.Body)
		close(streamEnded)
	}()
	reapCtx, stopReap := context.WithCancel(context.Background())
	defer stopReap()
	go (&sessions.Reaper{Store: store, Clock: clock}).Run(reapCtx)
	deadline := time.Now().Add(5 * time.Second)
	for clock.Timers() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // waits for the reaper to arm its timer
	}
	// Past the window's end, and within the store's grace (1 minute) after
	// which an ended session's record is deleted.
	clock.Advance(30*time.Minute + time.Second)
	deadline = time.Now().Add(5 * time.Second)
	for {
		s, err := store.Get(context.Background(), sess.ID)
		if err != nil {
			t.Fatalf("session after the window closed: %v", err)
		}
		if s.State == sessions.StateExpired {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("session state after the window closed = %s; want expired", s.State)
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case <-streamEnded:
	case <-time.After(5 * time.Second):
		t.Error("the session's open stream stayed up after the session ended")
	}
	resp, body := rawPost(t, r.url, token, pingModern(), map[string]string{"MCP-Protocol-Version": mcp.ProtocolVersion20260728, "Mcp-Method": "tools/list"})
	if resp.StatusCode != 401 {
		t.Errorf("request after the window closed = %d %s; want 401", resp.StatusCode, body)
	}
	if _, _, err := tokenRequestErr(r.url); err == nil {
		t.Error("a new session opened outside the window; want it refused")
	}
}

// tokenRequestErr asks agent-1 for a token and fails unless it is refused.
func tokenRequestErr(base string) (int, map[string]any, error) {
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {"agent-1"}, "client_secret": {sessionKeys["KEY1"]}}
	resp, err := http.PostForm(base+"/oauth/token", form)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	if resp.StatusCode == 200 {
		return resp.StatusCode, body, nil
	}
	return resp.StatusCode, body, io.ErrUnexpectedEOF
}

// TestStoreDownFailsClosed: with Redis stopped, calls are refused with a
// retryable error; when it returns, service resumes by itself.
func TestStoreDownFailsClosed(t *testing.T) {
	srv := sessionstest.StartRedis(t)
	if !srv.Own {
		t.Skip("needs a redis-server of its own to stop")
	}
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = rc.Close() })
	store := sessions.NewRedis(rc, sessions.RedisOptions{Prefix: sessionstest.Prefix()})
	r := startReplica(t, replicaOpts{store: store})
	token := mintToken(t, r.url, "agent-1", sessionKeys["KEY1"], "")
	c, err := mcpClient(t, r.url, token, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := callTool(c, "demo__list_files", `{}`); err != nil || res.IsError {
		t.Fatalf("call with Redis up = %+v, %v", res, err)
	}
	srv.Stop()
	resp, body := rawPost(t, r.url, token, pingModern(), map[string]string{"MCP-Protocol-Version": mcp.ProtocolVersion20260728, "Mcp-Method": "tools/list"})
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !strings.Contains(body, "unavailable") {
		t.Errorf("request with Redis down = %d %s (Retry-After %q); want 503, retryable", resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
	// Refused either at authentication (503) or, when a lookup of the token from the last
	// second is reused (authCache), at admission with a retryable tool error.
	if res, err := callTool(c, "demo__list_files", `{}`); err == nil && !res.IsError {
		t.Error("a call went through with the store down")
	} else if err == nil && !strings.Contains(gateway.ResultText(res), "unavailable") {
		t.Errorf("call with the store down = %q; want a retryable 'unavailable' refusal", gateway.ResultText(res))
	}
	if got := r.gw.Metrics().Snapshot().StoreErrors; got == 0 {
		t.Error("store errors were not counted")
	}
	srv.Start()
	// This Redis keeps nothing on disk: the session went with it, and its
	// token stays refused. A new session works without restarting toolgate.
	if res, err := callTool(c, "demo__list_files", `{}`); err == nil && !res.IsError {
		t.Fatal("a call went through on a session the store no longer has")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		status, body, _ := tokenRequest(t, r.url, "agent-1", sessionKeys["KEY1"], "basic", nil)
		if status != 200 {
			if time.Now().After(deadline) {
				t.Fatalf("no new session 10s after Redis came back: %d %v", status, body)
			}
			time.Sleep(50 * time.Millisecond)
			continue
		}
		c, err = mcpClient(t, r.url, body["access_token"].(string), "", nil)
		if err != nil {
			t.Fatal(err)
		}
		res, err := callTool(c, "demo__list_files", `{}`)
		if err == nil && !res.IsError {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no service 10s after Redis came back: %+v, %v", res, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// silence unused warnings for helpers used by later tests.
var _ = sync.Mutex{}
