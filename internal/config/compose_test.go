package config

import (
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
	for _, name := range []string{"toolgate", "redis"} {
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
				if _, err := Load(host); err != nil {
					t.Errorf("service toolgate mounts an invalid configuration: %v", err)
				}
			}
		}
	}
	if !mountedConfig {
		t.Error("service toolgate mounts no configuration under /etc/toolgate/")
	}
}
