package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/internal/audit"
	"github.com/toolgate/toolgate/internal/config"
	"github.com/toolgate/toolgate/internal/ssf"
	"github.com/toolgate/toolgate/internal/telemetry"
	"github.com/toolgate/toolgate/policies"
)

// runAudit follows the audit stream: toolgate audit tail --config FILE.
func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "tail" {
		fmt.Fprintln(stderr, "usage: toolgate audit tail --config FILE [--from ID] [--follow] [--kind KIND]")
		return 2
	}
	fs := flag.NewFlagSet("audit tail", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "toolgate.yaml", "the gateway's configuration file (its store and audit sections say where the events are)")
	from := fs.String("from", "0", `start after this entry: "0" for the beginning, "$" for new events only, or an entry id`)
	follow := fs.Bool("follow", true, "wait for new events; false stops at the end")
	kind := fs.String("kind", "", "show only events of this kind (decision, revoke, freeze, narrow, resume, approval, policy_reload)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, "toolgate:", err)
		return 1
	}
	enc := json.NewEncoder(stdout)
	print := func(e audit.Entry) error {
		if *kind != "" && string(e.Event.Kind) != *kind {
			return nil
		}
		return enc.Encode(e)
	}
	if err := tailAudit(ctx, cfg, *from, *follow, print); err != nil {
		fmt.Fprintln(stderr, "toolgate: audit tail:", err)
		return 1
	}
	return 0
}

// tailAudit reads the events where cfg puts them.
func tailAudit(ctx context.Context, cfg *config.Config, from string, follow bool, fn func(audit.Entry) error) error {
	if cfg.Store.Type != "redis" {
		if cfg.Audit.File == "" {
			return errors.New("the memory store keeps audit events in the log only: set audit.file to keep them in a file")
		}
		line := 0
		if from != "0" && from != "" {
			n, err := strconv.Atoi(from)
			if err != nil {
				return fmt.Errorf("--from %q: with an audit file, give a line number", from)
			}
			line = n
		}
		return audit.TailFile(ctx, cfg.Audit.File, line, follow, 500*time.Millisecond, fn)
	}
	client, err := auditClient(cfg)
	if err != nil {
		return err
	}
	defer client.Close()
	return audit.TailRedis(ctx, client, cfg.Audit.StreamKey(cfg.Store.Redis.Prefix), from, follow, fn)
}

func auditClient(cfg *config.Config) (redis.UniversalClient, error) {
	if cfg.Store.Redis.URL == "" {
		return redis.NewUniversalClient(&redis.UniversalOptions{Addrs: cfg.Store.Redis.Addrs, MasterName: cfg.Store.Redis.MasterName}), nil
	}
	opts, err := redis.ParseURL(cfg.Store.Redis.URL)
	if err != nil {
		return nil, fmt.Errorf("store.redis.url: %w", err)
	}
	return redis.NewClient(opts), nil
}

// observability is serve's telemetry, audit and Shared Signals wiring.
type observability struct {
	providers *telemetry.Providers
	recorder  *audit.Recorder
	closeSink func() error
	gw        atomic.Pointer[gateway.Gateway]
	log       *slog.Logger
}

// startObservability sets up what cfg's telemetry and audit sections ask
// for. Shared Signals deliveries run until ctx ends.
func startObservability(ctx context.Context, cfg *config.Config, log *slog.Logger) (*observability, error) {
	prov, err := telemetry.Setup(ctx, cfg.Telemetry, version)
	if err != nil {
		return nil, err
	}
	o := &observability{providers: prov, log: log}
	sink, closeSink, err := cfg.AuditSink(nil)
	if err != nil {
		_ = prov.Shutdown(ctx)
		return nil, err
	}
	o.closeSink = closeSink
	opts := audit.Options{}
	if *cfg.Audit.Log {
		opts.Logger = log.With("component", "audit")
	}
	if ss := cfg.Audit.SharedSignals; ss.Enabled() {
		key, err := ssf.LoadKey(ss.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("audit.shared_signals: %w", err)
		}
		signer, err := ssf.NewSigner(ss.Issuer, key, ss.KeyID, nil)
		if err != nil {
			return nil, fmt.Errorf("audit.shared_signals: %w", err)
		}
		pusher, err := ssf.NewPusher(ss, signer, ssf.Options{Logger: log.With("component", "shared-signals")})
		if err != nil {
			return nil, err
		}
		go pusher.Run(ctx)
		opts.Tap = func(e audit.Event) {
			if e.Kind == audit.KindRevoke && e.Session != "" {
				pusher.Revoked(ssf.Revocation{Session: e.Session, Agent: e.Agent, Reason: e.Reason, Initiator: e.Actor, Time: e.Time})
			}
		}
	}
	o.recorder = audit.NewRecorder(sink, opts)
	return o, nil
}

// gatewayTelemetry is what the gateway reports to.
func (o *observability) gatewayTelemetry(cfg *config.Config) gateway.Telemetry {
	t := gateway.Telemetry{Meter: o.providers.Meter, Audit: o.recorder,
		RecordArguments: cfg.Telemetry.Traces.RecordArguments, RecordResults: cfg.Telemetry.Traces.RecordResults}
	if o.providers.TracesOn {
		t.Tracer = o.providers.Tracer
	}
	return t
}

// policyReloaded is the policy engine's OnReload hook.
func (o *observability) policyReloaded(ev policies.ReloadEvent) {
	if gw := o.gw.Load(); gw != nil {
		gw.PolicyReloaded(ev)
	}
}

// adminHandler adds Prometheus' /metrics (unauthenticated, like most
// scrape targets: keep the admin listener private) to the admin API.
func (o *observability) adminHandler(admin http.Handler) http.Handler {
	if o.providers.Prometheus == nil {
		return admin
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", o.providers.Prometheus)
	mux.Handle("/", admin)
	return mux
}

// close flushes the audit queue and the exporters.
func (o *observability) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := o.recorder.Close(); err != nil {
		o.log.Warn("closing the audit sink", "err", err)
	}
	if err := o.closeSink(); err != nil {
		o.log.Warn("closing the audit connection", "err", err)
	}
	if err := o.providers.Shutdown(ctx); err != nil {
		o.log.Warn("flushing telemetry", "err", err)
	}
}
