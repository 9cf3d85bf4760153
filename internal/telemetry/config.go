// Package telemetry sets up toolgate's OpenTelemetry traces and metrics and
// names what they record, so that every part of toolgate reports alike.
package telemetry

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Exporter names.
const (
	ExporterNone     = "none"
	ExporterOTLPGRPC = "otlp-grpc"
	ExporterOTLPHTTP = "otlp-http"
)

// Config is the telemetry: section of toolgate's configuration.
type Config struct {
	// ServiceName is the service.name resource attribute. Default "toolgate".
	ServiceName string        `yaml:"service_name"`
	Traces      TracesConfig  `yaml:"traces"`
	Metrics     MetricsConfig `yaml:"metrics"`
}

// TracesConfig says where spans go and what they may hold.
type TracesConfig struct {
	// Exporter is none (the default: no spans are made), otlp-grpc or otlp-http.
	Exporter string `yaml:"exporter"`
	// Endpoint is host:port for otlp-grpc (default localhost:4317) or a
	// URL for otlp-http (default http://localhost:4318/v1/traces).
	Endpoint string `yaml:"endpoint"`
	// Insecure sends otlp-grpc without TLS.
	Insecure bool `yaml:"insecure"`
	// SampleRatio is the share of new traces kept, 0..1; a sampled parent
	// is always followed. Default 1.
	SampleRatio *float64 `yaml:"sample_ratio"`
	// RecordArguments puts tool call arguments on spans
	// (gen_ai.tool.call.arguments); values of tools labelled credential
	// are redacted. Default off.
	RecordArguments bool `yaml:"record_arguments"`
	// RecordResults puts tool results on spans (gen_ai.tool.call.result),
	// redacted the same way. Default off.
	RecordResults bool `yaml:"record_results"`
}

// MetricsConfig says where metrics go.
type MetricsConfig struct {
	// Exporter is none (the default), otlp-grpc or otlp-http.
	Exporter string `yaml:"exporter"`
	// Endpoint: as for traces (otlp-http default http://localhost:4318/v1/metrics).
	Endpoint string `yaml:"endpoint"`
	// Insecure sends otlp-grpc without TLS.
	Insecure bool `yaml:"insecure"`
	// Interval between OTLP exports. Default 15s.
	Interval time.Duration `yaml:"interval"`
	// Prometheus serves /metrics on the admin listener.
	Prometheus bool `yaml:"prometheus"`
}

// Validate fills defaults and checks the values.
func (c *Config) Validate() error {
	if c.ServiceName == "" {
		c.ServiceName = "toolgate"
	}
	var errs []error
	if err := checkExporter("telemetry.traces", &c.Traces.Exporter, &c.Traces.Endpoint, "localhost:4317", "http://localhost:4318/v1/traces"); err != nil {
		errs = append(errs, err)
	}
	if r := c.Traces.SampleRatio; r != nil && (*r < 0 || *r > 1) {
		errs = append(errs, fmt.Errorf("telemetry.traces.sample_ratio: %v is outside 0..1 (1 keeps every trace)", *r))
	}
	if err := checkExporter("telemetry.metrics", &c.Metrics.Exporter, &c.Metrics.Endpoint, "localhost:4317", "http://localhost:4318/v1/metrics"); err != nil {
		errs = append(errs, err)
	}
	switch {
	case c.Metrics.Interval == 0:
		c.Metrics.Interval = 15 * time.Second
	case c.Metrics.Interval < time.Second:
		errs = append(errs, fmt.Errorf("telemetry.metrics.interval: %v is below 1s", c.Metrics.Interval))
	}
	return errors.Join(errs...)
}

// TracesOn reports whether spans are exported.
func (c *Config) TracesOn() bool { return c.Traces.Exporter != "" && c.Traces.Exporter != ExporterNone }

func checkExporter(where string, exporter, endpoint *string, grpcDefault, httpDefault string) error {
	switch *exporter {
	case "", ExporterNone:
		*exporter = ExporterNone
		return nil
	case ExporterOTLPGRPC:
		if *endpoint == "" {
			*endpoint = grpcDefault
		}
		if strings.Contains(*endpoint, "://") {
			return fmt.Errorf("%s.endpoint: %q: otlp-grpc takes host:port (for example otel-collector:4317)", where, *endpoint)
		}
		return nil
	case ExporterOTLPHTTP:
		if *endpoint == "" {
			*endpoint = httpDefault
		}
		u, err := url.Parse(*endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("%s.endpoint: %q: otlp-http takes a URL such as http://otel-collector:4318/v1/traces", where, *endpoint)
		}
		return nil
	}
	return fmt.Errorf("%s.exporter: %q is not one of none, otlp-grpc, otlp-http", where, *exporter)
}
