package main

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"
)

// TestDemoServesOverHTTP runs the demo tool server as its own service and
// calls it as toolgate would.
func TestDemoServesOverHTTP(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrc := make(chan string, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- serveDemo(ctx, "127.0.0.1:0", "", slog.New(slog.DiscardHandler), func(a string) { addrc <- a })
	}()
	var addr string
	select {
	case addr = <-addrc:
	case err := <-errc:
		t.Fatal(err)
	case <-time.After(10 * time.Second):
		t.Fatal("the demo server never became ready")
	}
	callCtx, callCancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer callCancel()
	c, err := client.NewStreamableHttpClient("http://" + addr + "/mcp")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Start(callCtx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Initialize(callCtx, mcp.InitializeRequest{}); err != nil {
		t.Fatal(err)
	}
	req := mcp.CallToolRequest{}
	req.Params.Name = "list_files"
	req.Params.Arguments = map[string]any{}
	res, err := c.CallTool(callCtx, req)
	if err != nil || res.IsError {
		t.Fatalf("list_files = %+v, %v", res, err)
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("serveDemo ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serveDemo did not stop")
	}
}
