package demo_test

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/toolgate/toolgate/tools/demo"
)

func connect(t *testing.T, opts demo.Options) (*client.Client, *demo.Server) {
	t.Helper()
	s, err := demo.New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	c, err := client.NewInProcessClient(s.MCPServer())
	if err != nil {
		t.Fatalf("NewInProcessClient: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	ctx := context.Background()
	if err := c.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	req := mcp.InitializeRequest{}
	req.Params.ClientInfo = mcp.Implementation{Name: "test", Version: "1"}
	if _, err := c.Initialize(ctx, req); err != nil {
		t.Fatalf("Initialize: %v", err)
	}
	return c, s
}

func call(t *testing.T, c *client.Client, name string, args map[string]any) (string, bool) {
	t.Helper()
	req := mcp.CallToolRequest{}
	req.Params.Name = name
	req.Params.Arguments = args
	res, err := c.CallTool(context.Background(), req)
	if err != nil {
		t.Fatalf("CallTool(%s): %v", name, err)
	}
	return res.Content[0].(mcp.TextContent).Text, res.IsError
}

func TestToolsAreDescribed(t *testing.T) {
	c, _ := connect(t, demo.Options{})
	res, err := c.ListTools(context.Background(), mcp.ListToolsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct{ readOnly, destructive, openWorld bool }{
		"read_file": {readOnly: true}, "list_files": {readOnly: true}, "read_secret": {readOnly: true},
		"http_request": {openWorld: true}, "run_shell": {destructive: true, openWorld: true},
		"deploy": {destructive: true, openWorld: true}, "sign_artifact": {}, "slow_count": {readOnly: true},
	}
	if len(res.Tools) != len(want) {
		t.Errorf("ListTools() = %d tools; want %d", len(res.Tools), len(want))
	}
	for _, tool := range res.Tools {
		w, ok := want[tool.Name]
		if !ok {
			t.Errorf("unexpected tool %q", tool.Name)
			continue
		}
		a := tool.Annotations
		if a.ReadOnlyHint == nil || *a.ReadOnlyHint != w.readOnly || *a.DestructiveHint != w.destructive || *a.OpenWorldHint != w.openWorld {
			t.Errorf("tool %q annotations = %+v; want %+v", tool.Name, a, w)
		}
		if tool.Description == "" {
			t.Errorf("tool %q has no description", tool.Name)
		}
	}
}

func TestReadFileStaysInSandbox(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a.txt"), []byte("alpha"), 0o644); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(t.TempDir(), "outside.txt")
	if err := os.WriteFile(outside, []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "link.txt")); err != nil {
		t.Fatal(err)
	}
	c, _ := connect(t, demo.Options{Sandbox: dir})
	tests := []struct {
		path    string
		want    string
		wantErr bool
	}{
		{path: "a.txt", want: "alpha"},
		{path: "./a.txt", want: "alpha"},
		{path: "../outside.txt", wantErr: true},
		{path: outside, wantErr: true},
		{path: "link.txt", wantErr: true},
		{path: "missing.txt", want: "no such file", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			got, isErr := call(t, c, "read_file", map[string]any{"path": tt.path})
			if isErr != tt.wantErr || !strings.Contains(got, tt.want) || strings.Contains(got, "secret") {
				t.Errorf("read_file(%q) = %q, isError %v; want %q, isError %v", tt.path, got, isErr, tt.want, tt.wantErr)
			}
		})
	}
}

func TestSampleSandbox(t *testing.T) {
	c, s := connect(t, demo.Options{})
	got, isErr := call(t, c, "list_files", nil)
	if isErr || !strings.Contains(got, "README.txt") || !strings.Contains(got, "notes") {
		t.Errorf("list_files() = %q; want the sample files", got)
	}
	got, _ = call(t, c, "read_file", map[string]any{"path": "notes/todo.md"})
	if !strings.Contains(got, "TODO") {
		t.Errorf("read_file(notes/todo.md) = %q; want the sample", got)
	}
	dir := s.Sandbox()
	s.Close()
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("sandbox %s still exists after Close: %v", dir, err)
	}
}

func TestSimulatedTools(t *testing.T) {
	c, _ := connect(t, demo.Options{})
	tests := []struct {
		tool    string
		args    map[string]any
		want    string
		wantErr bool
	}{
		{tool: "read_secret", args: map[string]any{"name": "payments/api_key"}, want: "sk_demo_"},
		{tool: "read_secret", args: map[string]any{"name": "nope"}, want: "no secret", wantErr: true},
		{tool: "http_request", args: map[string]any{"url": "https://evil.example/x", "method": "POST", "body": "data"}, want: `"simulated": true`},
		{tool: "run_shell", args: map[string]any{"command": "rm -rf /"}, want: `"would_run": "rm -rf /"`},
		{tool: "deploy", args: map[string]any{"service": "billing", "version": "2.3.1", "environment": "prod"}, want: `"environment": "prod"`},
		{tool: "deploy", args: map[string]any{"service": "billing", "version": "2.3.1", "environment": "moon"}, want: "not one of", wantErr: true},
		{tool: "run_shell", args: map[string]any{"command": "ls", "extra": 1}, want: "unknown field", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.tool+"/"+tt.want, func(t *testing.T) {
			got, isErr := call(t, c, tt.tool, tt.args)
			if isErr != tt.wantErr || !strings.Contains(got, tt.want) {
				t.Errorf("%s(%v) = %q, isError %v; want %q, isError %v", tt.tool, tt.args, got, isErr, tt.want, tt.wantErr)
			}
		})
	}
}

func TestSignArtifact(t *testing.T) {
	c, _ := connect(t, demo.Options{})
	digest := strings.Repeat("ab", 32)
	got, isErr := call(t, c, "sign_artifact", map[string]any{"digest": digest, "algorithm": "ed25519"})
	if isErr {
		t.Fatalf("sign_artifact = %q", got)
	}
	var out struct{ Signature, PublicKey string }
	var raw map[string]string
	if err := json.Unmarshal([]byte(got), &raw); err != nil {
		t.Fatal(err)
	}
	out.Signature, out.PublicKey = raw["signature"], raw["public_key"]
	sig, _ := hex.DecodeString(out.Signature)
	pub, _ := hex.DecodeString(out.PublicKey)
	msg, _ := hex.DecodeString(digest)
	if len(pub) != ed25519.PublicKeySize || !ed25519.Verify(pub, msg, sig) {
		t.Errorf("ed25519 signature %s does not verify with %s", out.Signature, out.PublicKey)
	}
	got, isErr = call(t, c, "sign_artifact", map[string]any{"digest": digest, "algorithm": "hmac-sha256"})
	if isErr || !strings.Contains(got, `"algorithm": "hmac-sha256"`) {
		t.Errorf("sign_artifact(hmac) = %q", got)
	}
	if _, isErr := call(t, c, "sign_artifact", map[string]any{"digest": "xyz"}); !isErr {
		t.Errorf("sign_artifact(bad digest) succeeded")
	}
}

func TestSlowCountProgressAndCancel(t *testing.T) {
	c, _ := connect(t, demo.Options{})
	var n atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c.OnNotification(func(note mcp.JSONRPCNotification) {
		if note.Method == string(mcp.MethodNotificationProgress) && n.Add(1) == 2 {
			cancel()
		}
	})
	req := mcp.CallToolRequest{}
	req.Params.Name = "slow_count"
	req.Params.Arguments = map[string]any{"n": 1000, "delay_ms": 10}
	req.Params.Meta = &mcp.Meta{ProgressToken: "p"}
	_, err := c.CallTool(ctx, req)
	// In process, the handler's own "stopped" error can win the race with the
	// client noticing its context: either way the call must end early.
	if err == nil || !(errors.Is(err, context.Canceled) || strings.Contains(err.Error(), "slow_count stopped at")) {
		t.Errorf("slow_count cancelled = %v; want it stopped by the cancellation", err)
	}
	if got := n.Load(); got < 2 || got > 10 {
		t.Errorf("slow_count sent %d progress notifications before stopping; want a few", got)
	}
}

func TestResourcesAndPrompt(t *testing.T) {
	c, _ := connect(t, demo.Options{})
	ctx := context.Background()
	for uri, want := range map[string]string{
		"demo://sandbox/README.txt": "demo sandbox",
		"demo://vault/index":        "payments/api_key",
		"demo://files/README.txt":   "demo sandbox",
	} {
		req := mcp.ReadResourceRequest{}
		req.Params.URI = uri
		res, err := c.ReadResource(ctx, req)
		if err != nil {
			t.Errorf("ReadResource(%q): %v", uri, err)
			continue
		}
		if tc := res.Contents[0].(mcp.TextResourceContents); !strings.Contains(tc.Text, want) {
			t.Errorf("ReadResource(%q) = %q; want %q", uri, tc.Text, want)
		}
	}
	req := mcp.GetPromptRequest{}
	req.Params.Name = "incident_review"
	req.Params.Arguments = map[string]string{"service": "billing"}
	res, err := c.GetPrompt(ctx, req)
	if err != nil || !strings.Contains(res.Messages[0].Content.(mcp.TextContent).Text, "billing") {
		t.Errorf("GetPrompt(incident_review) = %+v, %v; want a message about billing", res, err)
	}
}
