// Command testupstream serves the test upstream over stdio for toolgate's tests.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/toolgate/toolgate/tools/internal/testupstream"
)

func main() {
	name := os.Getenv("TESTUPSTREAM_NAME")
	if name == "" {
		name = "stdio"
	}
	u := testupstream.New(name)
	// getenv lets tests see which variables reached the child.
	u.Server.AddTool(mcp.NewTool("getenv", mcp.WithString("name", mcp.Required())),
		func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			v, ok := os.LookupEnv(req.GetString("name", ""))
			return mcp.NewToolResultText(fmt.Sprintf("%t:%s", ok, v)), nil
		})
	u.Server.AddTool(mcp.NewTool("pid"), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return mcp.NewToolResultText(fmt.Sprint(os.Getpid())), nil
	})
	if err := server.ServeStdio(u.Server); err != nil {
		fmt.Fprintln(os.Stderr, "testupstream:", err)
		os.Exit(1)
	}
}
