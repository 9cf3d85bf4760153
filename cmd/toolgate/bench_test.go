package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/toolgate/toolgate/internal/bench"
)

// TestBenchRuns runs the bench briefly against a real gateway process (this
// test binary, running "serve") and checks the report's shape, not its figures.
func TestBenchRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a gateway process")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	phases, err := bench.Run(context.Background(), bench.Options{
		Concurrency: []int{1, 4},
		Duration:    200 * time.Millisecond,
		Rounds:      1,
		Gateway: func(configPath string) *exec.Cmd {
			cmd := exec.Command(exe, "serve", "--config", configPath)
			cmd.Env = append(os.Environ(), runMainEnv+"=1")
			return cmd
		},
	}, &out)
	if err != nil {
		t.Fatalf("bench.Run: %v\n%s", err, out.String())
	}
	if len(phases) != 4 {
		t.Fatalf("got %d phases; want 4 (direct and gateway at 1 and 4 clients)", len(phases))
	}
	for _, p := range phases {
		if p.Calls == 0 || p.Errors != 0 || p.P50 <= 0 || p.P99 < p.P50 {
			t.Errorf("phase %+v: want calls, no errors, 0 < p50 <= p99", p)
		}
		if p.Target == "gateway" && p.RSSBytes == 0 {
			t.Errorf("gateway phase without RSS: %+v", p)
		}
	}
	if !strings.Contains(out.String(), "added") {
		t.Errorf("report lacks the added-latency line:\n%s", out.String())
	}
}
