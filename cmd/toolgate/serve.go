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
	"strings"
	"time"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/internal/config"
	"github.com/toolgate/toolgate/tools"
)

func runServe(ctx context.Context, args []string, _, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "toolgate.yaml", "path of the YAML configuration file")
	listen := fs.String("listen", "", "address agents connect to (overrides gateway.listen)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, "toolgate:", err)
		return 1
	}
	if *listen != "" {
		cfg.Gateway.Listen = *listen
	}
	log := newLogger(stderr, cfg.Log)
	if err := serve(ctx, cfg, log, nil); err != nil {
		log.Error("toolgate stopped", "err", err)
		return 1
	}
	return 0
}

// serve runs the gateway until ctx ends. ready, if not nil, is called with
// the listening address once agents can connect.
func serve(ctx context.Context, cfg *config.Config, log *slog.Logger, ready func(addr string)) error {
	var gw *gateway.Gateway
	manager, err := tools.New(cfg.Tools, tools.Options{
		Logger: log.With("component", "tools"),
		OnChange: func() {
			if gw != nil {
				gw.Sync()
			}
		},
	})
	if err != nil {
		return err
	}
	defer manager.Close()
	gw, err = gateway.New(cfg.Gateway, manager, gateway.Options{Logger: log.With("component", "gateway"), Version: version})
	if err != nil {
		return err
	}
	if err := manager.Start(ctx); err != nil {
		// Upstreams that are down keep reconnecting; the others serve.
		log.Warn("some upstreams are not ready", "err", err)
	}
	gw.Sync()

	ln, err := net.Listen("tcp", cfg.Gateway.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{Handler: gw.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("toolgate listening", "addr", ln.Addr().String(), "mcp", "http://"+ln.Addr().String()+"/mcp", "tools", len(manager.Tools()))
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
	_ = gw.Close(shutdown)
	if err := srv.Shutdown(shutdown); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

func newLogger(w io.Writer, cfg config.Log) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(strings.ToUpper(cfg.Level)))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
