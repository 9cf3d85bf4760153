package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
		{[]string{"policy", "test", "../../examples/policies"}, 0, "ok  \t../../examples/policies"},
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
