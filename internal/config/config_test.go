package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string // error substring; empty: valid
	}{
		{"minimal", "tools:\n  servers:\n    - name: demo\n      transport: builtin\n      builtin: demo\n", ""},
		{"unknown key", "gateway:\n  listn: 127.0.0.1:1\n", "field listn not found"},
		{"unknown top-level key", "gatway: {}\n", "field gatway not found"},
		{"duplicate key", "log:\n  level: info\n  level: debug\n", "already defined"},
		{"bad level", "log:\n  level: loud\n", "log.level"},
		{"two documents", "log: {}\n---\nlog: {}\n", "more than one YAML document"},
		{"empty", "", "empty"},
		{"bad body limit", "gateway:\n  max_body_bytes: 10\n", "max_body_bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml))
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Parse(%q) = %v; want no error", tt.yaml, err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Parse(%q) = %v; want error containing %q", tt.yaml, err, tt.want)
			}
		})
	}
}

func TestLoadNamesTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(path, []byte("nope: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("Load(%q) = %v; want an error naming the file and line", path, err)
	}
}

func TestExamplesLoad(t *testing.T) {
	paths, _ := filepath.Glob("../../examples/*.yaml")
	if len(paths) == 0 {
		t.Fatal("no example configs found in examples/")
	}
	for _, p := range paths {
		if _, err := Load(p); err != nil {
			t.Errorf("Load(%q) = %v; want the example to be valid", p, err)
		}
	}
}
