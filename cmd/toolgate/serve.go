package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/internal/config"
	"github.com/toolgate/toolgate/policies"
	"github.com/toolgate/toolgate/sessions"
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
	if addr := os.Getenv("TOOLGATE_PPROF_ADDR"); addr != "" {
		// Profiling for performance work, on an address the operator
		// chooses (keep it on loopback): net/http/pprof's handlers.
		go func() {
			mux := http.NewServeMux()
			mux.HandleFunc("/debug/pprof/", pprof.Index)
			mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
			log.Info("pprof listening", "addr", addr, "err", http.ListenAndServe(addr, mux))
		}()
	}
	if err := serve(ctx, cfg, log, nil); err != nil {
		log.Error("toolgate stopped", "err", err)
		return 1
	}
	return 0
}

// serve runs the gateway until ctx ends. ready, if not nil, is called with
// the listening address once agents can connect.
func serve(ctx context.Context, cfg *config.Config, log *slog.Logger, ready func(addr string)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	store, closeStore, err := cfg.Store.Open(ctx, nil, nil)
	if err != nil {
		return fmt.Errorf("session store: %w", err)
	}
	defer closeStore()
	obs, err := startObservability(ctx, cfg, log) // audit.go: traces, metrics, audit, Shared Signals
	if err != nil {
		return err
	}
	defer obs.close()

	var policy gateway.Policy
	var engine *policies.Engine
	if len(cfg.Policies.Paths) > 0 {
		engine, err = policies.NewEngine(cfg.Policies.Paths, policies.EngineOptions{
			Options: cfg.Policies.Options(), Logger: log.With("component", "policies"), OnReload: obs.policyReloaded})
		if err != nil {
			return fmt.Errorf("load policies: %w", err)
		}
		policy = engine
		if every, _ := cfg.Policies.Interval(); every > 0 {
			go engine.Watch(ctx, every)
		}
		go reloadOnHangup(ctx, engine, log)
	}
	auth, err := gateway.NewAuthenticator(cfg.Identity, nil, nil, nil)
	if err != nil {
		return err
	}

	var gw *gateway.Gateway
	var gwReady sync.Mutex
	gwReady.Lock()
	manager, err := tools.New(cfg.Tools, tools.Options{
		Logger: log.With("component", "tools"),
		OnChange: func() {
			gwReady.Lock()
			defer gwReady.Unlock()
			gw.Sync()
		},
	})
	if err != nil {
		return err
	}
	defer manager.Close()
	gw, err = gateway.New(cfg.Gateway, manager, gateway.Options{
		Store: store, Auth: auth, Profiles: cfg.Profiles, Policy: policy,
		Logger: log.With("component", "gateway"), Version: version, Telemetry: obs.gatewayTelemetry(cfg),
	})
	if err != nil {
		return err
	}
	obs.gw.Store(gw) // policy reloads are reported from here on
	gwReady.Unlock()
	if err := manager.Start(ctx); err != nil {
		// Upstreams that are down keep reconnecting; the others serve.
		log.Warn("some upstreams are not ready", "err", err)
	}
	gw.Sync()
	go func() {
		if err := gw.Watch(ctx); err != nil && ctx.Err() == nil {
			log.Error("session events stopped", "err", err)
		}
	}()
	go (&sessions.Reaper{Store: store, Logger: log.With("component", "reaper")}).Run(ctx)

	var servers httpServers
	addr, err := servers.start("gateway", cfg.Gateway.Listen, gw.Handler())
	if err != nil {
		return err
	}
	if cfg.Admin.Listen != "" {
		admin, err := gw.AdminHandler(cfg.Admin, gateway.AdminOptions{Policies: engine})
		if err != nil {
			return err
		}
		aaddr, err := servers.start("admin", cfg.Admin.Listen, obs.adminHandler(admin))
		if err != nil {
			return err
		}
		log.Info("admin API listening", "addr", aaddr.String())
	}
	log.Info("toolgate listening", "addr", addr.String(), "mcp", "http://"+addr.String()+"/mcp",
		"tools", len(manager.Tools()), "store", cfg.Store.Type, "policies", len(cfg.Policies.Paths) > 0)
	if ready != nil {
		ready(addr.String())
	}
	return servers.wait(ctx, func(shutdown context.Context) { _ = gw.Close(shutdown) })
}

// reloadOnHangup reloads the policies on SIGHUP; a broken set is reported
// and the old one kept.
func reloadOnHangup(ctx context.Context, engine *policies.Engine, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if changed, err := engine.Reload(); err != nil {
				log.Error("policy reload failed; the previous policies stay in force", "err", err)
			} else {
				log.Info("policies reloaded", "changed", changed, "version", engine.Set().Version())
			}
		}
	}
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
