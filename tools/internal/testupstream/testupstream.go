// Package testupstream builds the MCP server toolgate's tests connect to over every transport.
package testupstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// EchoSchema is echo_raw's input schema, with keywords mcp.Tool would drop.
const EchoSchema = `{"$schema":"https://json-schema.org/draft/2020-12/schema","description":"Anything; echoed back verbatim","type":"object","properties":{"n":{"type":"integer"},"text":{"type":"string"}},"oneOf":[{"required":["n"]},{"required":["text"]}],"additionalProperties":true}`

// Upstream is a test server and what it observed.
type Upstream struct {
	Server *server.MCPServer
	// Canceled counts wait calls whose context ended before they finished.
	Canceled atomic.Int64
}

// New builds a test server. Its tools:
//   - echo_raw: answers with the raw JSON arguments it received, as text.
//   - wait: sends one progress notification, then waits for its context to end.
//   - cancel_count: answers how many wait calls saw their context end.
//   - count: sends n progress notifications 5ms apart, then answers.
//   - fail: answers with a JSON-RPC error.
//   - tool_error: answers with an isError result.
//   - add_tool: adds a tool with the given name (list_changed follows).
func New(name string) *Upstream {
	u := &Upstream{}
	s := server.NewMCPServer(name, "1.0.0",
		server.WithToolCapabilities(true),
		server.WithResourceCapabilities(false, true),
		server.WithPromptCapabilities(true),
	)
	u.Server = s
	s.AddTool(mcp.NewToolWithRawSchema("echo_raw", "Echo the raw arguments", json.RawMessage(EchoSchema)),
		func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return mcp.NewToolResultText(string(req.Params.RawArguments)), nil
		})
	s.AddTool(mcp.NewTool("wait", mcp.WithDescription("Wait until cancelled")),
		func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			progress(ctx, req, 1, 0)
			<-ctx.Done()
			u.Canceled.Add(1)
			return nil, ctx.Err()
		})
	s.AddTool(mcp.NewTool("cancel_count", mcp.WithDescription("How many waits were cancelled")),
		func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return mcp.NewToolResultText(fmt.Sprint(u.Canceled.Load())), nil
		})
	s.AddTool(mcp.NewTool("count", mcp.WithNumber("n", mcp.Required())),
		func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			n := req.GetInt("n", 1)
			for i := 1; i <= n; i++ {
				progress(ctx, req, i, n)
				// mcp-go servers write notifications and answers on different
				// goroutines; a short pause keeps each step's notification
				// ahead of the answer, as a real long-running tool's would be.
				select {
				case <-ctx.Done():
					return nil, ctx.Err()
				case <-time.After(5 * time.Millisecond):
				}
			}
			return mcp.NewToolResultText(fmt.Sprint(n)), nil
		})
	s.AddTool(mcp.NewTool("fail", mcp.WithDescription("Always fails at the protocol level")),
		func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return nil, errors.New("fail always fails")
		})
	s.AddTool(mcp.NewTool("tool_error", mcp.WithDescription("Always answers isError")),
		func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return mcp.NewToolResultError("it went wrong"), nil
		})
	s.AddTool(mcp.NewTool("add_tool", mcp.WithString("name", mcp.Required())),
		func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			name := req.GetString("name", "")
			s.AddTool(mcp.NewTool(name, mcp.WithDescription("added at run time")),
				func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
					return mcp.NewToolResultText(name), nil
				})
			return mcp.NewToolResultText("added " + name), nil
		})
	s.AddResource(mcp.NewResource("test://"+name+"/static", "static", mcp.WithMIMEType("text/plain")),
		func(ctx context.Context, req mcp.ReadResourceRequest) ([]mcp.ResourceContents, error) {
			return []mcp.ResourceContents{mcp.TextResourceContents{URI: req.Params.URI, Text: "static of " + name}}, nil
		})
	s.AddResourceTemplate(mcp.NewResourceTemplate("test://"+name+"/items/{id}", "item"),
		func(ctx context.Context, req mcp.ReadResourceRequest) ([]mcp.ResourceContents, error) {
			return []mcp.ResourceContents{mcp.TextResourceContents{URI: req.Params.URI, Text: "item at " + req.Params.URI}}, nil
		})
	s.AddPrompt(mcp.NewPrompt("greet", mcp.WithArgument("who", mcp.RequiredArgument())),
		func(ctx context.Context, req mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
			return mcp.NewGetPromptResult("greeting",
				[]mcp.PromptMessage{mcp.NewPromptMessage(mcp.RoleUser, mcp.NewTextContent("hello "+req.Params.Arguments["who"]+" from "+name))}), nil
		})
	return u
}

func progress(ctx context.Context, req mcp.CallToolRequest, i, total int) {
	if req.Params.Meta == nil || req.Params.Meta.ProgressToken == nil {
		return
	}
	params := map[string]any{"progressToken": req.Params.Meta.ProgressToken, "progress": i}
	if total > 0 {
		params["total"] = total
	}
	_ = server.ServerFromContext(ctx).SendNotificationToClient(ctx, string(mcp.MethodNotificationProgress), params)
}
