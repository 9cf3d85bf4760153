package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	promclient "github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// Providers are the tracer and meter providers toolgate passes to its
// parts. They are never global: tests build their own.
type Providers struct {
	// Tracer makes spans; a no-op provider when traces are off.
	Tracer trace.TracerProvider
	// Meter makes instruments; a no-op provider when no metric exporter
	// is configured.
	Meter metric.MeterProvider
	// Propagator reads and writes W3C traceparent/tracestate.
	Propagator propagation.TextMapPropagator
	// Prometheus serves the metrics in the Prometheus text format; nil
	// unless telemetry.metrics.prometheus is on.
	Prometheus http.Handler
	// TracesOn is true when spans are exported.
	TracesOn bool

	shutdown []func(context.Context) error
}

// Propagator is the W3C Trace Context propagator toolgate uses on every
// edge: the traceparent header, MCP _meta, upstream calls.
func Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// Off is the providers with everything off: no-op tracer and meter.
func Off() *Providers {
	return &Providers{Tracer: tracenoop.NewTracerProvider(), Meter: metricnoop.NewMeterProvider(), Propagator: Propagator()}
}

// Setup builds the providers cfg (validated) asks for. Exporters connect
// lazily, so an unreachable collector does not stop toolgate; spans and
// metrics are then dropped and the exporter logs through the OpenTelemetry
// error handler. Call Shutdown to flush.
func Setup(ctx context.Context, cfg Config, version string) (*Providers, error) {
	p := Off()
	res := resource.NewSchemaless(
		attribute.String("service.name", cfg.ServiceName),
		attribute.String("service.version", version),
	)
	if cfg.TracesOn() {
		exp, err := traceExporter(ctx, cfg.Traces)
		if err != nil {
			return nil, fmt.Errorf("telemetry.traces: %w", err)
		}
		ratio := 1.0
		if cfg.Traces.SampleRatio != nil {
			ratio = *cfg.Traces.SampleRatio
		}
		tp := sdktrace.NewTracerProvider(
			sdktrace.WithSpanProcessor(NewBatcher(exp, BatcherOptions{})),
			sdktrace.WithResource(res),
			sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))),
		)
		p.Tracer, p.TracesOn = tp, true
		p.shutdown = append(p.shutdown, tp.Shutdown)
	}
	var readers []sdkmetric.Option
	if cfg.Metrics.Exporter != ExporterNone && cfg.Metrics.Exporter != "" {
		exp, err := metricExporter(ctx, cfg.Metrics)
		if err != nil {
			return nil, fmt.Errorf("telemetry.metrics: %w", err)
		}
		readers = append(readers, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp, sdkmetric.WithInterval(cfg.Metrics.Interval))))
	}
	if cfg.Metrics.Prometheus {
		reg := promclient.NewRegistry()
		exp, err := otelprom.New(otelprom.WithRegisterer(reg))
		if err != nil {
			return nil, fmt.Errorf("telemetry.metrics.prometheus: %w", err)
		}
		readers = append(readers, sdkmetric.WithReader(exp))
		p.Prometheus = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	}
	if len(readers) > 0 {
		mp := sdkmetric.NewMeterProvider(append(readers, sdkmetric.WithResource(res))...)
		p.Meter = mp
		p.shutdown = append(p.shutdown, mp.Shutdown)
	}
	return p, nil
}

// Shutdown flushes and stops the exporters.
func (p *Providers) Shutdown(ctx context.Context) error {
	var errs []error
	for _, f := range p.shutdown {
		if err := f(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func traceExporter(ctx context.Context, c TracesConfig) (sdktrace.SpanExporter, error) {
	if c.Exporter == ExporterOTLPGRPC {
		opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(c.Endpoint)}
		if c.Insecure {
			opts = append(opts, otlptracegrpc.WithInsecure())
		}
		return otlptracegrpc.New(ctx, opts...)
	}
	return otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(c.Endpoint))
}

func metricExporter(ctx context.Context, c MetricsConfig) (sdkmetric.Exporter, error) {
	if c.Exporter == ExporterOTLPGRPC {
		opts := []otlpmetricgrpc.Option{otlpmetricgrpc.WithEndpoint(c.Endpoint)}
		if c.Insecure {
			opts = append(opts, otlpmetricgrpc.WithInsecure())
		}
		return otlpmetricgrpc.New(ctx, opts...)
	}
	return otlpmetrichttp.New(ctx, otlpmetrichttp.WithEndpointURL(c.Endpoint))
}
