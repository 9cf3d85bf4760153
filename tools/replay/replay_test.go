package replay_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"testing"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/toolgate/toolgate/tools/replay"
)

func TestServerAnswersRecordedCalls(t *testing.T) {
	rs := replay.New("mail", []string{"read", "send"})
	ts := httptest.NewServer(server.NewStreamableHTTPServer(rs.MCPServer()))
	defer ts.Close()
	ctx := context.Background()
	c, err := client.NewStreamableHttpClient(ts.URL + "/mcp")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Initialize(ctx, mcp.InitializeRequest{}); err != nil {
		t.Fatal(err)
	}
	rs.Load([]replay.Call{
		{Tool: "read", Args: json.RawMessage(`{"box":"a"}`), Result: "first"},
		{Tool: "read", Args: json.RawMessage(`{"box":"b"}`), Result: "second"},
		{Tool: "send", Args: json.RawMessage(`{}`), Error: "quota exceeded"},
	})
	tests := []struct {
		tool, args, want string
		isError          bool
	}{
		{"read", `{"box":"b"}`, "second", false}, // matched by arguments, not order
		{"read", `{"box":"z"}`, "first", false},  // no match: the first unused call
		{"send", `{}`, "quota exceeded", true},
		{"read", `{}`, "replay: no recorded call of read is left", true},
	}
	for _, tt := range tests {
		req := mcp.CallToolRequest{}
		req.Params.Name, req.Params.Arguments = tt.tool, json.RawMessage(tt.args)
		res, err := c.CallTool(ctx, req)
		if err != nil {
			t.Fatalf("CallTool(%s %s): %v", tt.tool, tt.args, err)
		}
		got := res.Content[0].(mcp.TextContent).Text
		if got != tt.want || res.IsError != tt.isError {
			t.Errorf("CallTool(%s %s) = %q (isError %v); want %q (%v)", tt.tool, tt.args, got, res.IsError, tt.want, tt.isError)
		}
	}
}
