package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/policies"
	"github.com/toolgate/toolgate/sessions"
	"github.com/toolgate/toolgate/tools"
)

const testAdminToken = "cli-test-admin-token-0123456789"

// adminServer is a real gateway (built-in demo upstream, memory store)
// whose admin API is served on httptest for the CLI to talk to.
type adminServer struct {
	gw    *gateway.Gateway
	store sessions.Store
	url   string
}

// newAdminServer starts the gateway and its admin API and points the
// admin commands' token variable at the right token. engine may be nil.
func newAdminServer(t *testing.T, engine *policies.Engine) *adminServer {
	t.Helper()
	cfg := tools.Config{Servers: []tools.ServerConfig{{Name: "demo", Transport: "builtin", Builtin: "demo"}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	m, err := tools.New(cfg, tools.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	store := sessions.NewMemory(sessions.Options{})
	var policy gateway.Policy
	if engine != nil {
		policy = engine
	}
	g, err := gateway.New(gateway.Config{}, m, gateway.Options{Logger: log, Store: store, Policy: policy,
		Profiles: map[string]*gateway.ProfileConfig{"default": {Tools: []string{"*"}}}})
	if err != nil {
		t.Fatal(err)
	}
	g.Sync()
	sum := sha256.Sum256([]byte(testAdminToken))
	h, err := g.AdminHandler(gateway.AdminConfig{Listen: "127.0.0.1:0", TokenSHA256: hex.EncodeToString(sum[:])},
		gateway.AdminOptions{Policies: engine})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	t.Setenv(adminTokenEnv, testAdminToken)
	t.Setenv(adminURLEnv, "")
	return &adminServer{gw: g, store: store, url: ts.URL}
}

// open opens a session of agent and makes one allowed call in it through
// the gateway's decision path.
func (s *adminServer) open(t *testing.T, agent string) string {
	t.Helper()
	ctx := context.Background()
	sess, _, err := s.store.Create(ctx, sessions.Spec{Agent: agent, Profile: "default", Scope: []string{"*"}, Lifetime: time.Hour})
	if err != nil {
		t.Fatalf("Create(%s): %v", agent, err)
	}
	out, err := s.gw.Decider().Admit(ctx, gateway.Call{SessionID: sess.ID, Name: "demo__list_files", Args: json.RawMessage(`{}`)})
	if err != nil || !out.Forward {
		t.Fatalf("Admit(demo__list_files) = %+v, %v; want allowed", out, err)
	}
	return sess.ID
}

// cliCase is one run of the command line and what it must give.
type cliCase struct {
	args    []string
	code    int
	stdout  string // substring of stdout
	stderr  string // substring of stderr
	setup   func(t *testing.T)
	inspect func(t *testing.T, stdout string)
}

func runCLI(t *testing.T, url string, cases []cliCase) {
	t.Helper()
	for _, tt := range cases {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			if tt.setup != nil {
				tt.setup(t)
			}
			args := append(append([]string(nil), tt.args...), "--admin-url", url)
			var out, errOut bytes.Buffer
			code := run(context.Background(), args, &out, &errOut)
			if code != tt.code || !strings.Contains(out.String(), tt.stdout) || !strings.Contains(errOut.String(), tt.stderr) {
				t.Errorf("run(%q) = %d, stdout %q, stderr %q; want %d, stdout containing %q, stderr containing %q",
					tt.args, code, out.String(), errOut.String(), tt.code, tt.stdout, tt.stderr)
			}
			if tt.inspect != nil && code == 0 {
				tt.inspect(t, out.String())
			}
		})
	}
}

func TestSessionsCommand(t *testing.T) {
	srv := newAdminServer(t, nil)
	id1 := srv.open(t, "agent-1")
	id2 := srv.open(t, "agent-2")
	unknown := strings.Repeat("0", 32)
	runCLI(t, srv.url, []cliCase{
		{args: []string{"sessions", "ls"}, stdout: id1},
		{args: []string{"sessions", "ls"}, stdout: id2},
		{args: []string{"sessions", "ls", "--limit", "1"}, stdout: "more: --cursor"},
		{args: []string{"sessions", "ls", "--agent", "agent-2", "--json"}, inspect: func(t *testing.T, out string) {
			var page gateway.SessionPage
			if err := json.Unmarshal([]byte(out), &page); err != nil || len(page.Sessions) != 1 || page.Sessions[0].ID != id2 {
				t.Errorf("sessions ls --agent agent-2 --json = %s (%v); want only %s", out, err, id2)
			}
		}},
		{args: []string{"sessions", "ls", "--state", "sleeping"}, code: 1, stderr: "state"},
		{args: []string{"sessions", "show", id1}, stdout: "demo__list_files"},
		{args: []string{"sessions", "show", id1, "--json"}, inspect: func(t *testing.T, out string) {
			var s gateway.AdminSession
			if err := json.Unmarshal([]byte(out), &s); err != nil || s.ID != id1 || len(s.History) != 1 || s.History[0].Decision != "allow" {
				t.Errorf("sessions show --json = %s (%v); want %s with one allowed call", out, err, id1)
			}
		}},
		{args: []string{"sessions", "show", unknown}, code: 1, stderr: "no such session"},
		{args: []string{"sessions", "show"}, code: 2, stderr: "Usage"},
		{args: []string{"sessions", "narrow", id1, "demo__deploy", "--label", "destructive"}, stdout: "removed: demo__deploy, label:destructive"},
		{args: []string{"sessions", "narrow", id1}, code: 2, stderr: "narrowing only removes"},
		{args: []string{"sessions", "freeze", id1, "--reason", "looks odd"}, stdout: "frozen: looks odd"},
		{args: []string{"sessions", "resume", id1}, stdout: "is active"},
		{args: []string{"sessions", "resume", id1}, code: 1, stderr: "409"},
		{args: []string{"sessions", "revoke", id1}, code: 2, stderr: "--reason is required"},
		{args: []string{"sessions", "revoke", id1, "--reason", "leaked"}, stdout: "revoked: leaked"},
		{args: []string{"sessions", "bogus"}, code: 2, stderr: `unknown command "bogus"`},
		{args: []string{"sessions", "ls"}, code: 1, stderr: "TOOLGATE_ADMIN_TOKEN is not set", setup: func(t *testing.T) {
			t.Setenv(adminTokenEnv, "")
		}},
		{args: []string{"sessions", "ls"}, code: 1, stderr: "not valid", setup: func(t *testing.T) {
			t.Setenv(adminTokenEnv, "wrong-token-0123456789")
		}},
	})
	// The narrowing and the revoke reached the store.
	s, err := srv.store.Get(context.Background(), id1)
	if err != nil || s.State != sessions.StateRevoked || len(s.Removed) != 2 {
		t.Errorf("session %s after the commands = %+v, %v; want revoked with 2 removals", id1, s, err)
	}
}

func TestAdminURLDefault(t *testing.T) {
	t.Setenv(adminURLEnv, "http://example.invalid:9")
	c := newAdminCmd("x", "x", 0, 0, &bytes.Buffer{}, &bytes.Buffer{})
	if *c.url != "http://example.invalid:9" {
		t.Errorf("--admin-url default with %s set = %q; want the variable's value", adminURLEnv, *c.url)
	}
	t.Setenv(adminURLEnv, "")
	c = newAdminCmd("x", "x", 0, 0, &bytes.Buffer{}, &bytes.Buffer{})
	if *c.url != defaultAdminURL {
		t.Errorf("--admin-url default = %q; want %q", *c.url, defaultAdminURL)
	}
}
