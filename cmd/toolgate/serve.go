package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"strconv"
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
	tuneRuntime(cfg.Runtime, log)
	addr := os.Getenv("TOOLGATE_PPROF_ADDR")
	if addr == "" && !strings.Contains(os.Getenv("GODEBUG"), "memprofilerate=") {
		// Nobody can read a heap profile: sampling allocations for one
		// would cost CPU and a table of their stacks (about 1.5 MiB).
		runtime.MemProfileRate = 0
	}
	if addr != "" {
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

// tuneRuntime sets the garbage collector's target and the soft memory
// limit as runtimeSettings decides, and logs what is in force.
func tuneRuntime(rt config.Runtime, log *slog.Logger) {
	gcPercent, memLimit := runtimeSettings(rt, os.Getenv, os.ReadFile)
	if gcPercent != 0 {
		debug.SetGCPercent(gcPercent)
	}
	if memLimit != 0 {
		debug.SetMemoryLimit(memLimit)
	}
	if n := maxProcs(rt, os.Getenv); n != 0 {
		runtime.GOMAXPROCS(n)
	}
	inForce := []metrics.Sample{{Name: "/gc/gogc:percent"}, {Name: "/gc/gomemlimit:bytes"}}
	metrics.Read(inForce)
	limit := "off"
	if v := inForce[1].Value.Uint64(); v < math.MaxInt64 {
		limit = fmt.Sprintf("%dMiB", v>>20)
	}
	log.Info("go runtime", "gc_percent", inForce[0].Value.Uint64(), "memory_limit", limit, "max_procs", runtime.GOMAXPROCS(0))
}

// maxProcs is the GOMAXPROCS serve sets, 0 to leave the runtime's: the
// GOMAXPROCS variable, when set, was applied by the runtime and wins.
func maxProcs(rt config.Runtime, getenv func(string) string) int {
	if getenv("GOMAXPROCS") != "" {
		return 0
	}
	return rt.MaxProcs
}

// runtimeSettings decides the GC percent and soft memory limit of serve,
// each 0 to leave the runtime's as they are: GOGC and GOMEMLIMIT, when set,
// were applied by the runtime and win; then the configuration's runtime
// section; then DefaultGCPercent, and 90% of the container's memory limit
// if it has one, for the garbage collector to work harder near it rather
// than the process being killed at it.
func runtimeSettings(rt config.Runtime, getenv func(string) string, readFile func(string) ([]byte, error)) (gcPercent int, memLimit int64) {
	if getenv("GOGC") == "" {
		gcPercent = rt.GCPercent
		if gcPercent == 0 {
			gcPercent = config.DefaultGCPercent
		}
	}
	if getenv("GOMEMLIMIT") == "" {
		switch limit, set := rt.MemoryLimitBytes(); {
		case set && limit < 0:
			memLimit = math.MaxInt64 // off
		case set:
			memLimit = limit
		default:
			memLimit = cgroupMemoryLimit(readFile) / 10 * 9
		}
	}
	return gcPercent, memLimit
}

// cgroupMemoryLimit is the memory limit of the process's cgroup (v2
// memory.max, v1 memory.limit_in_bytes), or 0 if it has none or it cannot
// be read. In a container the cgroup namespace makes its path "/".
func cgroupMemoryLimit(readFile func(string) ([]byte, error)) int64 {
	data, err := readFile("/proc/self/cgroup")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		// hierarchy-ID:controller-list:cgroup-path (cgroups(7))
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		var files []string
		switch {
		case f[0] == "0" && f[1] == "":
			files = []string{filepath.Join("/sys/fs/cgroup", f[2], "memory.max"), "/sys/fs/cgroup/memory.max"}
		case slices.Contains(strings.Split(f[1], ","), "memory"):
			files = []string{filepath.Join("/sys/fs/cgroup/memory", f[2], "memory.limit_in_bytes"), "/sys/fs/cgroup/memory/memory.limit_in_bytes"}
		}
		for _, name := range files {
			b, err := readFile(name)
			if err != nil {
				continue
			}
			// "max" (v2) or a number near 2^63 (v1) means no limit.
			if n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil && n > 0 && n < 1<<62 {
				return n
			}
			break
		}
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
