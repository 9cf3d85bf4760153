package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

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
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/mcp", server.NewStreamableHTTPServer(srv.MCPServer(),
		// It is meant to sit behind toolgate, reached by a service name.
		server.WithDisableLocalhostProtection(true)))
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	log.Info("demo tool server listening", "mcp", "http://"+ln.Addr().String()+"/mcp", "sandbox", srv.Sandbox())
	if ready != nil {
		ready(ln.Addr().String())
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(shutdown); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}
