package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/toolgate/toolgate/internal/config"
)

const (
	bridgeKey   = "bridge-test-agent-key-0123456789"
	bridgeAdmin = "bridge-test-admin-token-0123456789"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// startBridgeGateway serves a gateway with the built-in demo server and
// returns its address and its admin API's.
func startBridgeGateway(t *testing.T) (addr, adminAddr string) {
	t.Helper()
	addr, adminAddr = freeAddr(t), freeAddr(t)
	cfg, err := config.Parse([]byte(fmt.Sprintf(`
gateway: {listen: %q}
admin: {listen: %q, token_sha256: %s}
identity:
  api_keys:
    - {agent: bridge-agent, profile: default, sha256: %s}
profiles:
  default: {lifetime: 1h, tools: ["demo__list_files", "demo__read_file"]}
store: {type: memory}
tools:
  servers:
    - {name: demo, transport: builtin, builtin: demo}
`, addr, adminAddr, sha(bridgeAdmin), sha(bridgeKey))))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	errc := make(chan error, 1)
	go func() { errc <- serve(ctx, cfg, slog.New(slog.DiscardHandler), func(a string) { ready <- a }) }()
	t.Cleanup(func() {
		cancel()
		<-errc
	})
	select {
	case <-ready:
	case err := <-errc:
		t.Fatalf("serve: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("serve never became ready")
	}
	return addr, adminAddr
}

// startBridge runs the bridge between pipes and returns an mcp-go client
// speaking stdio to it, as an agent host would.
func startBridge(t *testing.T, cfg connectConfig) *client.Client {
	t.Helper()
	hostOut, bridgeIn := io.Pipe()
	bridgeOut, hostIn := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- bridge(ctx, cfg, hostOut, hostIn)
		hostIn.Close()
	}()
	c := client.NewClient(transport.NewIO(bridgeOut, bridgeIn, io.NopCloser(strings.NewReader(""))))
	t.Cleanup(func() {
		c.Close()
		bridgeIn.Close()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("bridge ended with %v; want nil after the host closed stdin", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("bridge did not end after the host closed stdin")
		}
	})
	callCtx, callCancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer callCancel()
	if err := c.Start(callCtx); err != nil {
		t.Fatal(err)
	}
	req := mcp.InitializeRequest{}
	req.Params.ProtocolVersion = mcp.LATEST_LEGACY_PROTOCOL_VERSION
	req.Params.ClientInfo = mcp.Implementation{Name: "bridge-test-host", Version: "1"}
	if _, err := c.Initialize(callCtx, req); err != nil {
		t.Fatalf("initialize through the bridge: %v", err)
	}
	return c
}

func callTool(ctx context.Context, c *client.Client, name string, args map[string]any) (*mcp.CallToolResult, error) {
	req := mcp.CallToolRequest{}
	req.Params.Name = name
	req.Params.Arguments = args
	return c.CallTool(ctx, req)
}

func adminDo(t *testing.T, adminAddr, method, path, body string) []byte {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+adminAddr+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+bridgeAdmin)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("admin %s %s = %s %s", method, path, resp.Status, b)
	}
	return b
}

type sessionList struct {
	Sessions []struct {
		ID    string `json:"id"`
		State string `json:"state"`
	} `json:"sessions"`
}

func agentSessions(t *testing.T, adminAddr string) sessionList {
	t.Helper()
	var l sessionList
	if err := json.Unmarshal(adminDo(t, adminAddr, "GET", "/v1/sessions?agent=bridge-agent", ""), &l); err != nil {
		t.Fatal(err)
	}
	return l
}

// TestBridge drives the bridge as a desktop host would: tools through it,
// a denied call, and a new session token after the first is revoked.
func TestBridge(t *testing.T) {
	addr, adminAddr := startBridgeGateway(t)
	c := startBridge(t, connectConfig{URL: "http://" + addr + "/mcp", Credential: bridgeKey, ClientID: "bridge-agent"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	list, err := c.ListTools(ctx, mcp.ListToolsRequest{})
	if err != nil {
		t.Fatalf("tools/list through the bridge: %v", err)
	}
	var names []string
	for _, tl := range list.Tools {
		names = append(names, tl.Name)
	}
	if got, want := strings.Join(names, ","), "demo__list_files,demo__read_file"; got != want {
		t.Errorf("tools/list through the bridge = %s; want %s", got, want)
	}

	tests := []struct {
		tool    string
		wantErr bool
	}{
		{"demo__list_files", false},
		{"demo__deploy", true}, // outside the profile's scope: denied
	}
	for _, tt := range tests {
		t.Run(tt.tool, func(t *testing.T) {
			res, err := callTool(ctx, c, tt.tool, map[string]any{})
			if err != nil {
				t.Fatalf("CallTool(%q) error %v", tt.tool, err)
			}
			if res.IsError != tt.wantErr {
				t.Errorf("CallTool(%q).IsError = %v; want %v (%+v)", tt.tool, res.IsError, tt.wantErr, res.Content)
			}
		})
	}

	t.Run("renews a revoked session token", func(t *testing.T) {
		before := agentSessions(t, adminAddr)
		if len(before.Sessions) != 1 {
			t.Fatalf("sessions of bridge-agent = %+v; want exactly one, opened by the bridge", before)
		}
		adminDo(t, adminAddr, "POST", "/v1/sessions/"+before.Sessions[0].ID+"/revoke", `{"reason":"bridge test"}`)
		res, err := callTool(ctx, c, "demo__list_files", map[string]any{})
		if err != nil || res.IsError {
			t.Fatalf("CallTool after revoke = %+v, %v; want a result through a new session", res, err)
		}
		after := agentSessions(t, adminAddr)
		active := 0
		for _, s := range after.Sessions {
			if s.State == "active" {
				active++
			}
		}
		if len(after.Sessions) != 2 || active != 1 {
			t.Errorf("sessions after revoke = %+v; want the revoked one and one new active one", after)
		}
	})
}

// TestBridgeRefusedCredential: a host request gets a JSON-RPC error that
// says the token endpoint refused, instead of hanging.
func TestBridgeRefusedCredential(t *testing.T) {
	addr, _ := startBridgeGateway(t)
	hostOut, bridgeIn := io.Pipe()
	bridgeOut, hostIn := io.Pipe()
	go func() {
		_ = bridge(context.Background(), connectConfig{URL: "http://" + addr + "/mcp", Credential: "wrong-key"}, hostOut, hostIn)
		hostIn.Close()
	}()
	go func() {
		_, _ = io.WriteString(bridgeIn, `{"jsonrpc":"2.0","id":7,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"h","version":"1"}}}`+"\n")
	}()
	line := make([]byte, 4096)
	n, err := bridgeOut.Read(line)
	if err != nil {
		t.Fatal(err)
	}
	var resp struct {
		ID    int `json:"id"`
		Error *struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(line[:n], &resp); err != nil {
		t.Fatalf("bridge answer %q: %v", line[:n], err)
	}
	if resp.ID != 7 || resp.Error == nil || !strings.Contains(resp.Error.Message, "token endpoint refused the credential: invalid_client") {
		t.Errorf("answer to initialize with a wrong credential = %s; want an error for id 7 naming the refusal", line[:n])
	}
	bridgeIn.Close()
}

// TestTokenSourceRenews checks when session tokens are fetched, with a
// clock the test moves.
func TestTokenSourceRenews(t *testing.T) {
	var fetched atomic.Int32
	mux := http.NewServeMux()
	var srvURL string
	mux.HandleFunc("GET /.well-known/oauth-protected-resource/mcp", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, `{"resource":%q,"authorization_servers":[%q]}`, srvURL+"/mcp", srvURL)
	})
	mux.HandleFunc("GET /.well-known/oauth-authorization-server", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, `{"issuer":%q,"token_endpoint":%q}`, srvURL, srvURL+"/token")
	})
	mux.HandleFunc("POST /token", func(w http.ResponseWriter, r *http.Request) {
		if _, secret, ok := r.BasicAuth(); !ok || secret != "k" || r.FormValue("grant_type") != "client_credentials" {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error":"invalid_client","error_description":"no"}`)
			return
		}
		n := fetched.Add(1)
		fmt.Fprintf(w, `{"access_token":"tok-%d","token_type":"Bearer","expires_in":100}`, n)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	srvURL = srv.URL

	now := time.Unix(1_000_000, 0)
	cfg := connectConfig{URL: srv.URL + "/mcp", Credential: "k", Now: func() time.Time { return now }}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	ts := &tokenSource{cfg: cfg}
	steps := []struct {
		advance    time.Duration
		invalidate bool
		want       string
	}{
		{0, false, "tok-1"},
		{69 * time.Second, false, "tok-1"}, // renewal is due 30s before the end (70s)
		{1 * time.Second, false, "tok-2"},
		{0, true, "tok-3"}, // refused by the gateway: a new one at once
	}
	for i, s := range steps {
		now = now.Add(s.advance)
		if s.invalidate {
			ts.Invalidate()
		}
		got, err := ts.Token(context.Background())
		if err != nil || got != s.want {
			t.Errorf("step %d: Token() = %q, %v; want %q", i, got, err, s.want)
		}
	}

	bad := &tokenSource{cfg: cfg}
	bad.cfg.Credential = "wrong"
	if _, err := bad.Token(context.Background()); err == nil || !strings.Contains(err.Error(), "invalid_client") {
		t.Errorf("Token() with a wrong credential = %v; want the endpoint's invalid_client", err)
	}
}

func TestConnectFlags(t *testing.T) {
	t.Setenv("BRIDGE_TEST_EMPTY", "")
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--url", "http://127.0.0.1:1/mcp"}, "--credential-env is required"},
		{[]string{"--url", "http://127.0.0.1:1/mcp", "--credential-env", "BRIDGE_TEST_EMPTY"}, "BRIDGE_TEST_EMPTY is empty"},
		{[]string{"--url", "ftp://x", "--credential-env", "PATH"}, "give the gateway's MCP endpoint"},
	}
	for _, tt := range tests {
		var stderr strings.Builder
		code := runConnect(context.Background(), tt.args, io.Discard, &stderr)
		if code != 2 || !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("connect %q = %d, %q; want 2 and %q", tt.args, code, stderr.String(), tt.want)
		}
	}
}
