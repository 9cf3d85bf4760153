package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/toolgate/toolgate/internal/audit"
	"github.com/toolgate/toolgate/sessions/sessionstest"
)

func TestAuditTail(t *testing.T) {
	rs := sessionstest.StartRedis(t)
	prefix := sessionstest.Prefix()
	dir := t.TempDir()
	file := filepath.Join(dir, "audit.jsonl")
	events := []audit.Event{
		{Kind: audit.KindDecision, Session: "s1", Tool: "demo__deploy", Decision: "deny"},
		{Kind: audit.KindRevoke, Session: "s1", Actor: "operator", Reason: "leak"},
	}
	fileSink, err := audit.OpenFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := fileSink.Write(context.Background(), events); err != nil {
		t.Fatal(err)
	}
	_ = fileSink.Close()
	if err := audit.NewRedisStream(rs.Client(), prefix+":audit", 1000).Write(context.Background(), events); err != nil {
		t.Fatal(err)
	}

	for _, tt := range []struct {
		name, store string
		args        []string
		want        []string // kinds, in order
	}{
		{"memory file", "store: {type: memory}\naudit: {file: audit.jsonl}\n", nil, []string{"decision", "revoke"}},
		{"memory file from line", "store: {type: memory}\naudit: {file: audit.jsonl}\n", []string{"--from", "1"}, []string{"revoke"}},
		{"redis stream", fmt.Sprintf("store: {type: redis, redis: {url: %q, prefix: %q}}\n", "redis://"+rs.Addr, prefix), nil, []string{"decision", "revoke"}},
		{"redis kind filter", fmt.Sprintf("store: {type: redis, redis: {url: %q, prefix: %q}}\n", "redis://"+rs.Addr, prefix), []string{"--kind", "revoke"}, []string{"revoke"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfgPath := filepath.Join(dir, "toolgate.yaml")
			if err := os.WriteFile(cfgPath, []byte(tt.store), 0o600); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			args := append([]string{"audit", "tail", "--config", cfgPath, "--follow=false"}, tt.args...)
			if code := run(context.Background(), args, &stdout, &stderr); code != 0 {
				t.Fatalf("run(%q) = %d; stderr: %s", args, code, stderr.String())
			}
			var kinds []string
			for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
				var e audit.Entry
				if err := json.Unmarshal([]byte(line), &e); err != nil {
					t.Fatalf("output line %q: %v", line, err)
				}
				if e.ID == "" {
					t.Errorf("entry %q has no id", line)
				}
				kinds = append(kinds, string(e.Event.Kind))
			}
			if strings.Join(kinds, ",") != strings.Join(tt.want, ",") {
				t.Errorf("audit tail %v = %v; want %v", tt.args, kinds, tt.want)
			}
		})
	}
}

func TestAuditTailUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"audit"}, &stdout, &stderr); code != 2 {
		t.Errorf("run(audit) = %d; want 2", code)
	}
	if !strings.Contains(stderr.String(), "audit tail") {
		t.Errorf("usage %q does not mention audit tail", stderr.String())
	}
}
