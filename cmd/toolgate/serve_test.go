package main

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/toolgate/toolgate/internal/config"
)

// TestQuickstart runs what the README's first command runs — serve with
// examples/quickstart.yaml — and uses it as an agent would.
func TestQuickstart(t *testing.T) {
	cfg, err := config.Load("../../examples/quickstart.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Gateway.Listen = "127.0.0.1:0"
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	errc := make(chan error, 1)
	go func() { errc <- serve(ctx, cfg, slog.New(slog.DiscardHandler), func(a string) { addrc <- a }) }()
	var addr string
	select {
	case addr = <-addrc:
	case err := <-errc:
		t.Fatalf("serve: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("serve never became ready")
	}

	callCtx, callCancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer callCancel()
	// The quick start's demo agent presents its API key directly, which
	// opens an implicit session (the README says so).
	c, err := client.NewStreamableHttpClient("http://"+addr+"/mcp",
		transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer demo-agent-key-change-me"}))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(callCtx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Initialize(callCtx, mcp.InitializeRequest{}); err != nil {
		t.Fatal(err)
	}
	list, err := c.ListTools(callCtx, mcp.ListToolsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, tool := range list.Tools {
		names[tool.Name] = true
	}
	for _, want := range []string{"demo__read_file", "demo__read_secret", "demo__http_request", "demo__run_shell", "demo__deploy", "demo__sign_artifact"} {
		if !names[want] {
			t.Errorf("quick start tools/list lacks %q", want)
		}
	}
	req := mcp.CallToolRequest{}
	req.Params.Name = "demo__list_files"
	req.Params.Arguments = map[string]any{}
	res, err := c.CallTool(callCtx, req)
	if err != nil || res.IsError {
		t.Fatalf("demo__list_files = %+v, %v", res, err)
	}
	c.Close()

	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("serve ended with %v; want a clean shutdown", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop after its context ended")
	}
}
