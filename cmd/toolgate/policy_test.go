package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/toolgate/toolgate/policies"
)

func TestPolicyCommand(t *testing.T) {
	broken := t.TempDir()
	if err := os.WriteFile(filepath.Join(broken, "p.yaml"), []byte("rules:\n  - {id: a, when: 'cal.x', action: deny, message: m}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args     []string
		wantCode int
		wantOut  string
	}{
		{[]string{"policy", "check", "../../examples/policies"}, 0, "ok"},
		{[]string{"policy", "test", "../../examples/policies/demo"}, 0, "ok  \t../../examples/policies/demo"},
		{[]string{"policy", "check", broken}, 1, "undeclared reference to 'cal'"},
		{[]string{"policy"}, 2, "Usage"},
	}
	for _, tt := range tests {
		var out, errOut bytes.Buffer
		code := run(context.Background(), tt.args, &out, &errOut)
		if code != tt.wantCode || !strings.Contains(out.String()+errOut.String(), tt.wantOut) {
			t.Errorf("run(%q) = %d, output %q; want %d and %q", tt.args, code, out.String()+errOut.String(), tt.wantCode, tt.wantOut)
		}
	}
}

func TestPolicyStatusAndReload(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "p.yaml")
	write := func(data string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("rules:\n  - {id: no-deploy, match: {tools: [demo__deploy]}, action: deny, message: no}\n")
	engine, err := policies.NewEngine([]string{dir}, policies.EngineOptions{})
	if err != nil {
		t.Fatal(err)
	}
	srv := newAdminServer(t, engine)
	version := engine.Set().Version()
	runCLI(t, srv.url, []cliCase{
		{args: []string{"policy", "status"}, stdout: version},
		{args: []string{"policy", "status", "--json"}, stdout: `"configured": true`},
		{args: []string{"policy", "reload"}, stdout: "policies unchanged"},
		{args: []string{"policy", "reload"}, code: 1, stderr: "undeclared reference to 'cal'",
			setup: func(t *testing.T) { write("rules:\n  - {id: a, when: 'cal.x', action: deny, message: m}\n") }},
		{args: []string{"policy", "status"}, stdout: "undeclared reference"},
		{args: []string{"policy", "reload"}, stdout: "policies reloaded",
			setup: func(t *testing.T) { write("rules: []\n") }},
	})
	if engine.Set().Version() == version {
		t.Error("the engine kept the old version after a good reload")
	}

	none := newAdminServer(t, nil)
	runCLI(t, none.url, []cliCase{
		{args: []string{"policy", "status"}, stdout: "no policies are configured"},
		{args: []string{"policy", "reload"}, code: 1, stderr: "nothing to reload"},
	})
}
