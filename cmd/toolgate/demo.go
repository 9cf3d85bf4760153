package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"github.com/mark3labs/mcp-go/server"

	"github.com/toolgate/toolgate/tools/demo"
)

// runDemo serves the built-in demo tool server over Streamable HTTP, for
// deployments that run it as its own service (docker-compose.yml).
func runDemo(ctx context.Context, args []string, _, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:9000", "address to serve MCP on (path /mcp)")
	sandbox := fs.String("sandbox", "", "folder read_file serves (default: a temporary one with sample files)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil))
	if err := serveDemo(ctx, *listen, *sandbox, log, nil); err != nil {
		fmt.Fprintln(stderr, "toolgate demo:", err)
		return 1
	}
	return 0
}

func serveDemo(ctx context.Context, listen, sandbox string, log *slog.Logger, ready func(addr string)) error {
	srv, err := demo.New(demo.Options{Sandbox: sandbox, Logger: log})
	if err != nil {
		return err
	}
	defer srv.Close()
	mux := http.NewServeMux()
	mux.Handle("/mcp", server.NewStreamableHTTPServer(srv.MCPServer(),
		// It is meant to sit behind toolgate, reached by a service name.
		server.WithDisableLocalhostProtection(true)))
	var servers httpServers
	addr, err := servers.start("demo", listen, mux)
	if err != nil {
		return err
	}
	log.Info("demo tool server listening", "mcp", "http://"+addr.String()+"/mcp", "sandbox", srv.Sandbox())
	if ready != nil {
		ready(addr.String())
	}
	return servers.wait(ctx, nil)
}
