package main

import (
	"bytes"
	"context"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
)

// The test binary doubles as the toolgate binary: with this variable set
// it runs the command line it was given (bench starts "toolgate serve").
const runMainEnv = "TOOLGATE_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

func TestRun(t *testing.T) {
	tests := []struct {
		args     []string
		code     int
		contains string
	}{
		{nil, 2, "Usage: toolgate"},
		{[]string{"help"}, 0, "serve"},
		{[]string{"nope"}, 2, `unknown command "nope"`},
		{[]string{"version"}, 0, "toolgate dev"},
		{[]string{"serve", "--config", "does-not-exist.yaml"}, 1, "does-not-exist.yaml"},
		{[]string{"serve", "--bogus"}, 2, "flag provided but not defined"},
		{[]string{"bench", "-concurrency", "0"}, 2, "not a positive number"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out bytes.Buffer
			code := run(context.Background(), tt.args, &out, &out)
			if code != tt.code || !strings.Contains(out.String(), tt.contains) {
				t.Errorf("run(%q) = %d, %q; want %d containing %q", tt.args, code, out.String(), tt.code, tt.contains)
			}
		})
	}
}
