package config

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestComposeFile checks docker-compose.yml without a Docker engine: the
// services it names, the Dockerfile it builds, and that every toolgate
// configuration it mounts exists and loads.
func TestComposeFile(t *testing.T) {
	root := filepath.Join("..", "..")
	data, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Build *struct {
				Context    string `yaml:"context"`
				Dockerfile string `yaml:"dockerfile"`
			} `yaml:"build"`
			Image   string   `yaml:"image"`
			Volumes []string `yaml:"volumes"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(data, &compose); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	for _, name := range []string{"toolgate", "redis", "demo"} {
		if _, ok := compose.Services[name]; !ok {
			t.Errorf("docker-compose.yml has no service %q", name)
		}
	}
	tg := compose.Services["toolgate"]
	if tg.Build == nil {
		t.Fatal("service toolgate is not built from the repository")
	}
	if _, err := os.Stat(filepath.Join(root, tg.Build.Context, tg.Build.Dockerfile)); err != nil {
		t.Errorf("service toolgate builds from a missing Dockerfile: %v", err)
	}
	mountedConfig := false
	for name, svc := range compose.Services {
		if svc.Build == nil && svc.Image == "" {
			t.Errorf("service %q has neither build nor image", name)
		}
		for _, v := range svc.Volumes {
			src, dst, _ := strings.Cut(v, ":")
			if !strings.HasPrefix(src, ".") {
				continue // a named volume
			}
			host := filepath.Join(root, src)
			if _, err := os.Stat(host); err != nil {
				t.Errorf("service %q mounts %s, which does not exist", name, src)
				continue
			}
			if name == "toolgate" && strings.HasPrefix(dst, "/etc/toolgate/") && strings.HasSuffix(src, ".yaml") {
				mountedConfig = true
				cfg, err := Load(host)
				if err != nil {
					t.Errorf("service toolgate mounts an invalid configuration: %v", err)
					continue
				}
				// Every tool server it reaches over the network is a service here.
				for _, up := range cfg.Tools.Servers {
					if up.URL == "" {
						continue
					}
					u, err := url.Parse(up.URL)
					if err != nil {
						t.Errorf("tool server %q: %v", up.Name, err)
						continue
					}
					if _, ok := compose.Services[u.Hostname()]; !ok {
						t.Errorf("tool server %q is at %s, which is no service of docker-compose.yml", up.Name, up.URL)
					}
				}
			}
		}
	}
	if !mountedConfig {
		t.Error("service toolgate mounts no configuration under /etc/toolgate/")
	}
}

// TestComposeObservability checks the observability services of
// docker-compose.yml: they exist, the collector's pipelines name only
// receivers and exporters it defines, traces reach the jaeger service,
// Prometheus scrapes services that exist, and toolgate's config exports to
// the collector.
func TestComposeObservability(t *testing.T) {
	root := filepath.Join("..", "..")
	var compose struct {
		Services map[string]struct {
			Volumes []string `yaml:"volumes"`
		} `yaml:"services"`
	}
	readYAML(t, filepath.Join(root, "docker-compose.yml"), &compose)
	for _, name := range []string{"otel-collector", "jaeger", "prometheus"} {
		if _, ok := compose.Services[name]; !ok {
			t.Errorf("docker-compose.yml has no service %q", name)
		}
	}

	var col struct {
		Receivers map[string]any `yaml:"receivers"`
		Exporters map[string]struct {
			Endpoint string `yaml:"endpoint"`
		} `yaml:"exporters"`
		Processors map[string]any `yaml:"processors"`
		Service    struct {
			Pipelines map[string]struct {
				Receivers  []string `yaml:"receivers"`
				Processors []string `yaml:"processors"`
				Exporters  []string `yaml:"exporters"`
			} `yaml:"pipelines"`
		} `yaml:"service"`
	}
	readYAML(t, filepath.Join(root, "deploy", "otel-collector.yaml"), &col)
	for _, p := range []string{"traces", "metrics"} {
		pl, ok := col.Service.Pipelines[p]
		if !ok {
			t.Errorf("collector has no %s pipeline", p)
		}
		for _, r := range pl.Receivers {
			if _, ok := col.Receivers[r]; !ok {
				t.Errorf("collector pipeline %s names undefined receiver %q", p, r)
			}
		}
		for _, e := range pl.Exporters {
			if _, ok := col.Exporters[e]; !ok {
				t.Errorf("collector pipeline %s names undefined exporter %q", p, e)
			}
		}
	}
	if ep := col.Exporters["otlp/jaeger"].Endpoint; !strings.HasPrefix(ep, "jaeger:") {
		t.Errorf("collector sends traces to %q; want the jaeger service", ep)
	}

	var prom struct {
		ScrapeConfigs []struct {
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	readYAML(t, filepath.Join(root, "deploy", "prometheus.yml"), &prom)
	for _, sc := range prom.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			for _, target := range st.Targets {
				host, _, _ := strings.Cut(target, ":")
				if _, ok := compose.Services[host]; !ok {
					t.Errorf("prometheus scrapes %s, which is not a compose service", target)
				}
			}
		}
	}

	cfg, err := Load(filepath.Join(root, "deploy", "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, got := range []string{cfg.Telemetry.Traces.Endpoint, cfg.Telemetry.Metrics.Endpoint} {
		if !strings.HasPrefix(got, "otel-collector:") {
			t.Errorf("toolgate exports to %q; want the otel-collector service", got)
		}
	}
	if !cfg.Telemetry.Metrics.Prometheus || cfg.Admin.Listen == "" {
		t.Error("toolgate serves no Prometheus /metrics on its admin listener")
	}
	if cfg.Store.Type != "redis" {
		t.Errorf("store = %s; want redis, so that the audit stream is durable", cfg.Store.Type)
	}
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
