package telemetry

import (
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	ratio := 2.0
	for _, tt := range []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"off", Config{}, ""},
		{"grpc", Config{Traces: TracesConfig{Exporter: "otlp-grpc", Endpoint: "collector:4317"}}, ""},
		{"http", Config{Metrics: MetricsConfig{Exporter: "otlp-http"}}, ""},
		{"grpc with url", Config{Traces: TracesConfig{Exporter: "otlp-grpc", Endpoint: "http://c:4317"}}, "takes host:port"},
		{"http without url", Config{Traces: TracesConfig{Exporter: "otlp-http", Endpoint: "c:4318"}}, "takes a URL"},
		{"unknown exporter", Config{Traces: TracesConfig{Exporter: "jaeger"}}, "not one of"},
		{"ratio", Config{Traces: TracesConfig{SampleRatio: &ratio}}, "outside 0..1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if (tt.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("Validate() = %v; want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestPrometheusEndpoint(t *testing.T) {
	cfg := Config{Metrics: MetricsConfig{Prometheus: true}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	p, err := Setup(context.Background(), cfg, "test")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	in, err := NewInstruments(p.Meter)
	if err != nil {
		t.Fatal(err)
	}
	in.Call(context.Background(), "deny", "demo__deploy", 0.002)
	in.Revocation(context.Background(), "operator", 1)
	if err := in.Observe(Observed{Upstreams: func() map[string]bool { return map[string]bool{"demo": true} }}); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	p.Prometheus.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		`toolgate_calls_total{`, `toolgate_decision="deny"`, `gen_ai_tool_name="demo__deploy"`,
		`toolgate_decision_duration_seconds_bucket{`, `toolgate_revocations_total{`, `reason="operator"`,
		`toolgate_upstream_up{`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", body)
	}
}

func TestSetupOff(t *testing.T) {
	cfg := Config{}
	_ = cfg.Validate()
	p, err := Setup(context.Background(), cfg, "test")
	if err != nil {
		t.Fatal(err)
	}
	if p.TracesOn || p.Prometheus != nil {
		t.Errorf("Setup(off) = traces %v, prometheus %v; want neither", p.TracesOn, p.Prometheus != nil)
	}
	_, span := p.Tracer.Tracer("x").Start(context.Background(), "s")
	if span.IsRecording() {
		t.Error("span records with traces off")
	}
}
