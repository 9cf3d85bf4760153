package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// The test binary doubles as a stdio MCP upstream: run with this variable
// set, it serves the test upstream on stdin/stdout instead of running tests.
const stdioServerEnv = "TOOLGATE_TEST_STDIO_UPSTREAM"

func TestMain(m *testing.M) {
	if os.Getenv(stdioServerEnv) == "1" {
		if err := server.ServeStdio(newUpstream(nil)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// richSchema uses keywords that mcp.Tool would drop when relayed naively
// (notes/mcp-go.md pitfall 4); the gateway must list it unchanged.
const richSchema = `{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","description":"top-level description","properties":{"n":{"type":"integer"},"s":{"type":"string"},"mode":{"oneOf":[{"const":"a"},{"const":"b"}]}},"additionalProperties":false}`

// upstreamRecorder collects what the test upstream received, for
// assertions. A nil recorder records nothing (the stdio subprocess).
type upstreamRecorder struct {
	mu        sync.Mutex
	args      []json.RawMessage
	cancelled chan struct{}
	calls     int
}

func newRecorder() *upstreamRecorder {
	return &upstreamRecorder{cancelled: make(chan struct{}, 16)}
}

func (r *upstreamRecorder) lastArgs() json.RawMessage {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.args) == 0 {
		return nil
	}
	return r.args[len(r.args)-1]
}

// newUpstream is the MCP tool server behind the gateway in these tests:
// echo returns the raw arguments it got, progress reports steps, block
// waits until cancelled, fail returns a JSON-RPC error.
func newUpstream(rec *upstreamRecorder) *server.MCPServer {
	s := server.NewMCPServer("test-upstream", "1.0.0", server.WithToolCapabilities(true),
		server.WithResourceCapabilities(false, true), server.WithPromptCapabilities(true))
	s.AddTool(mcp.NewToolWithRawSchema("echo", "Returns the raw arguments it received.", json.RawMessage(richSchema)),
		func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			raw := req.Params.RawArguments
			if rec != nil {
				rec.mu.Lock()
				rec.args = append(rec.args, append(json.RawMessage(nil), raw...))
				rec.calls++
				rec.mu.Unlock()
			}
			return mcp.NewToolResultText(string(raw)), nil
		})
	s.AddTool(mcp.NewTool("progress", mcp.WithDescription("Reports progress steps."), mcp.WithNumber("steps")),
		func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			steps := int(req.GetFloat("steps", 3))
			var token mcp.ProgressToken
			if req.Params.Meta != nil {
				token = req.Params.Meta.ProgressToken
			}
			srv := server.ServerFromContext(ctx)
			for i := 1; i <= steps; i++ {
				if token != nil {
					_ = srv.SendNotificationToClient(ctx, "notifications/progress", map[string]any{
						"progressToken": token, "progress": i, "total": steps, "message": fmt.Sprintf("step %d", i)})
				}
				time.Sleep(10 * time.Millisecond) // lets each notification leave before the next
			}
			return mcp.NewToolResultText(fmt.Sprintf("done %d", steps)), nil
		})
	s.AddTool(mcp.NewTool("block", mcp.WithDescription("Waits until cancelled.")),
		func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			select {
			case <-ctx.Done():
				if rec != nil {
					rec.cancelled <- struct{}{}
				}
				return nil, ctx.Err()
			case <-time.After(30 * time.Second):
				return mcp.NewToolResultText("not cancelled"), nil
			}
		})
	s.AddTool(mcp.NewTool("fail", mcp.WithDescription("Always fails.")),
		func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return nil, fmt.Errorf("disk on fire")
		})
	s.AddResource(mcp.NewResource("test://readme", "readme", mcp.WithMIMEType("text/plain")),
		func(ctx context.Context, req mcp.ReadResourceRequest) ([]mcp.ResourceContents, error) {
			return []mcp.ResourceContents{mcp.TextResourceContents{URI: "test://readme", MIMEType: "text/plain", Text: "hello from upstream"}}, nil
		})
	s.AddPrompt(mcp.NewPrompt("greet", mcp.WithPromptDescription("Greets someone."), mcp.WithArgument("who")),
		func(ctx context.Context, req mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
			return mcp.NewGetPromptResult("greeting", []mcp.PromptMessage{
				mcp.NewPromptMessage(mcp.RoleUser, mcp.NewTextContent("Hello, "+req.Params.Arguments["who"])),
			}), nil
		})
	return s
}
