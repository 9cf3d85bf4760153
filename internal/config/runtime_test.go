package config

import (
	"strings"
	"testing"
)

func TestRuntime(t *testing.T) {
	tests := []struct {
		yaml      string
		limit     int64
		set       bool
		gcPercent int
		err       string
	}{
		{yaml: "", gcPercent: DefaultGCPercent},
		{yaml: "runtime: {memory_limit: 512MiB}", limit: 512 << 20, set: true, gcPercent: DefaultGCPercent},
		{yaml: "runtime: {memory_limit: 2GiB, gc_percent: 100}", limit: 2 << 30, set: true, gcPercent: 100},
		{yaml: "runtime: {memory_limit: 1048576}", limit: 1 << 20, set: true, gcPercent: DefaultGCPercent},
		{yaml: "runtime: {memory_limit: 64 KiB}", limit: 64 << 10, set: true, gcPercent: DefaultGCPercent},
		{yaml: "runtime: {memory_limit: \"off\"}", limit: -1, set: true, gcPercent: DefaultGCPercent},
		{yaml: "runtime: {memory_limit: 512MB}", err: `runtime.memory_limit: "512MB": not a number of bytes`},
		{yaml: "runtime: {memory_limit: 0MiB}", err: "not above zero"},
		{yaml: "runtime: {memory_limit: 9000000TiB}", err: "too large"},
		{yaml: "runtime: {gc_percent: -1}", err: "runtime.gc_percent: -1 is negative"},
		{yaml: "runtime: {max_procs: -2}", err: "runtime.max_procs: -2 is negative"},
	}
	for _, tt := range tests {
		t.Run(tt.yaml, func(t *testing.T) {
			cfg, err := Parse([]byte("tools: {}\n" + tt.yaml + "\n"))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Parse(%q) = %v; want an error containing %q", tt.yaml, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.yaml, err)
			}
			limit, set := cfg.Runtime.MemoryLimitBytes()
			if limit != tt.limit || set != tt.set || cfg.Runtime.GCPercent != tt.gcPercent {
				t.Errorf("Parse(%q): memory limit %d (set %v), gc_percent %d; want %d (%v), %d",
					tt.yaml, limit, set, cfg.Runtime.GCPercent, tt.limit, tt.set, tt.gcPercent)
			}
		})
	}
}
