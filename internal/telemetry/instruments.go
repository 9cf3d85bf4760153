package telemetry

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Instruments are toolgate's metrics. Their methods are cheap and safe
// for concurrent use; with a no-op meter they do nothing.
type Instruments struct {
	calls        metric.Int64Counter
	decisionTime metric.Float64Histogram
	revocations  metric.Int64Counter
	upstreamTime metric.Float64Histogram
	reloads      metric.Int64Counter
	auditErrors  metric.Int64Counter
	meter        metric.Meter
}

// latencyBuckets suit a gateway's decisions and upstream calls: 0.1 ms to 10 s.
var latencyBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// NewInstruments creates the instruments on mp.
func NewInstruments(mp metric.MeterProvider) (*Instruments, error) {
	m := mp.Meter(ScopeName)
	var errs []error
	check := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	in := &Instruments{meter: m}
	var err error
	in.calls, err = m.Int64Counter(MetricCalls, metric.WithUnit("{call}"),
		metric.WithDescription("Tool calls decided, by decision and tool."))
	check(err)
	in.decisionTime, err = m.Float64Histogram(MetricDecisionTime, metric.WithUnit("s"),
		metric.WithDescription("Time to decide a tool call: snapshot, policies, commit."),
		metric.WithExplicitBucketBoundaries(latencyBuckets...))
	check(err)
	in.revocations, err = m.Int64Counter(MetricRevocations, metric.WithUnit("{session}"),
		metric.WithDescription("Sessions revoked, by reason (policy, operator, agent)."))
	check(err)
	in.upstreamTime, err = m.Float64Histogram(MetricUpstreamTime, metric.WithUnit("s"),
		metric.WithDescription("Duration of calls to upstream tool servers."),
		metric.WithExplicitBucketBoundaries(latencyBuckets...))
	check(err)
	in.reloads, err = m.Int64Counter(MetricPolicyReloads, metric.WithUnit("{reload}"),
		metric.WithDescription("Policy reloads, by result (changed, unchanged, error)."))
	check(err)
	in.auditErrors, err = m.Int64Counter(MetricAuditErrors, metric.WithUnit("{event}"),
		metric.WithDescription("Audit events that could not be written."))
	check(err)
	return in, errors.Join(errs...)
}

// Call counts one decided call and its decision time.
func (in *Instruments) Call(ctx context.Context, decision, tool string, seconds float64) {
	d := attribute.String(string(Decision), decision)
	in.calls.Add(ctx, 1, metric.WithAttributes(d, attribute.String(string(GenAIToolName), tool)))
	in.decisionTime.Record(ctx, seconds, metric.WithAttributes(d))
}

// Revocation counts a revoked session.
func (in *Instruments) Revocation(ctx context.Context, reason string, n int64) {
	in.revocations.Add(ctx, n, metric.WithAttributes(attribute.String("reason", reason)))
}

// Upstream records one upstream call; errorType is empty on success.
func (in *Instruments) Upstream(ctx context.Context, server, errorType string, seconds float64) {
	attrs := []attribute.KeyValue{attribute.String(string(Server), server)}
	if errorType != "" {
		attrs = append(attrs, attribute.String(string(ErrorType), errorType))
	}
	in.upstreamTime.Record(ctx, seconds, metric.WithAttributes(attrs...))
}

// PolicyReload counts a reload; result is changed, unchanged or error.
func (in *Instruments) PolicyReload(ctx context.Context, result string) {
	in.reloads.Add(ctx, 1, metric.WithAttributes(attribute.String(string(Result), result)))
}

// AuditError counts an audit event that was not written.
func (in *Instruments) AuditError(ctx context.Context) { in.auditErrors.Add(ctx, 1) }

// Observed are values read at each export or scrape rather than counted
// as they happen. Nil fields are not reported. They must be quick.
type Observed struct {
	// ActiveSessions counts the active sessions.
	ActiveSessions func(context.Context) (int64, error)
	// Upstreams says, per upstream server, whether it is connected.
	Upstreams func() map[string]bool
	// StoreErrors is the running count of failed store operations.
	StoreErrors func() int64
}

// Observe registers the observed values.
func (in *Instruments) Observe(o Observed) error {
	var errs []error
	if o.ActiveSessions != nil {
		_, err := in.meter.Int64ObservableGauge(MetricActiveSessions, metric.WithUnit("{session}"),
			metric.WithDescription("Active sessions."),
			metric.WithInt64Callback(func(ctx context.Context, obs metric.Int64Observer) error {
				n, err := o.ActiveSessions(ctx)
				if err != nil {
					return err
				}
				obs.Observe(n)
				return nil
			}))
		errs = append(errs, err)
	}
	if o.Upstreams != nil {
		_, err := in.meter.Int64ObservableGauge(MetricUpstreamUp,
			metric.WithDescription("1 when the upstream tool server is connected, else 0."),
			metric.WithInt64Callback(func(_ context.Context, obs metric.Int64Observer) error {
				for name, up := range o.Upstreams() {
					v := int64(0)
					if up {
						v = 1
					}
					obs.Observe(v, metric.WithAttributes(attribute.String(string(Server), name)))
				}
				return nil
			}))
		errs = append(errs, err)
	}
	if o.StoreErrors != nil {
		_, err := in.meter.Int64ObservableCounter(MetricStoreErrors, metric.WithUnit("{error}"),
			metric.WithDescription("Session store operations that failed because the store was unavailable."),
			metric.WithInt64Callback(func(_ context.Context, obs metric.Int64Observer) error {
				obs.Observe(o.StoreErrors())
				return nil
			}))
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
