package config

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestReadmeConfigReference decodes the configuration reference of the
// README strictly, so that a key it documents cannot drift from the code.
// (It is not validated: it names files that exist only in a deployment.)
func TestReadmeConfigReference(t *testing.T) {
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	i := strings.Index(text, "## Configuration reference")
	if i < 0 {
		t.Fatal("README has no configuration reference")
	}
	text = text[i:]
	start := strings.Index(text, "```yaml\n")
	end := strings.Index(text[start+8:], "```")
	if start < 0 || end < 0 {
		t.Fatal("the configuration reference has no yaml block")
	}
	block := text[start+8 : start+8+end]
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader([]byte(block)))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatalf("README configuration reference: %v", err)
	}
	if len(cfg.Tools.Servers) == 0 || len(cfg.Profiles) == 0 || cfg.Telemetry.Traces.Exporter == "" {
		t.Errorf("README configuration reference decoded to %+v; want servers, profiles and telemetry", cfg)
	}
}
