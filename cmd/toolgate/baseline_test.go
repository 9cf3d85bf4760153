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

func TestBaselineCommand(t *testing.T) {
	dir := t.TempDir()
	traces := filepath.Join(dir, "t.jsonl")
	lines := `{"id":"1","suite":"shop","label":"benign","calls":[{"tool":"list_items","args":{}},{"tool":"send_invoice","args":{"to":"billing@shop.example"},"result":["ok"]}]}
{"id":"2","suite":"shop","label":"attack","calls":[{"tool":"delete_all","args":{}}]}

{"id":"3","suite":"shop","label":"benign","calls":[{"tool":"list_items","args":{}}]}
`
	if err := os.WriteFile(traces, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.jsonl")
	if err := os.WriteFile(bad, []byte("{\"id\":\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "baseline.json")
	tests := []struct {
		args     []string
		wantCode int
		wantOut  string
	}{
		{[]string{"baseline", "learn", "--traces", traces, "--out", out}, 0, "learned 2 benign sessions (1 others skipped)"},
		{[]string{"baseline", "learn", "--traces", bad, "--out", out}, 1, "bad.jsonl:1"},
		{[]string{"baseline", "learn", "--traces", filepath.Join(dir, "missing.jsonl"), "--out", out}, 1, "read traces"},
		{[]string{"baseline", "learn", "--traces", traces}, 2, "Usage"},
		{[]string{"baseline"}, 2, "Usage"},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), tt.args, &stdout, &stderr)
		if code != tt.wantCode || !strings.Contains(stdout.String()+stderr.String(), tt.wantOut) {
			t.Errorf("run(%q) = %d, output %q; want %d and %q", tt.args, code, stdout.String()+stderr.String(), tt.wantCode, tt.wantOut)
		}
	}

	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"baseline", "learn", "--profile", "retail", "--out", out, traces}, &stdout, &stderr); code != 0 {
		t.Fatalf("run(baseline learn --profile retail) = %d: %s", code, stderr.String())
	}
	b, err := policies.LoadBaseline(out)
	if err != nil {
		t.Fatalf("LoadBaseline: %v", err)
	}
	p := b.Profiles["retail"]
	if p == nil || p.Traces != 2 || p.Tools["shop__list_items"] != 2 || p.Tools["shop__delete_all"] != 0 ||
		p.Transitions["shop__list_items>shop__send_invoice"] != 1 || len(p.Destinations) != 1 {
		t.Errorf("learned profile retail = %+v; want 2 sessions, shop__list_items twice, no attack tool, 1 destination", p)
	}
}
