package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEval(t *testing.T) {
	dir := t.TempDir()
	js, md, html := filepath.Join(dir, "r.json"), filepath.Join(dir, "r.md"), filepath.Join(dir, "r.html")
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"eval", "--config", "../../evals/scenarios/config.yaml",
		"--traces", "../../evals/scenarios/scenarios.jsonl", "--json", js, "--report", md, "--html", html, "--quiet"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("eval exit %d; stderr: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "attacks stopped 92.0% (23/25)") {
		t.Errorf("eval summary = %q; want the attacks stopped figure", stdout.String())
	}
	data, err := os.ReadFile(js)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Traces []struct {
			ID        string   `json:"id"`
			Decisions []string `json:"decisions"`
		} `json:"traces"`
	}
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Traces) < 40 || rep.Traces[0].ID == "" || len(rep.Traces[0].Decisions) == 0 {
		t.Errorf("eval --json wrote %d traces; want every scenario with its decisions", len(rep.Traces))
	}
	for _, p := range []string{md, html} {
		if st, err := os.Stat(p); err != nil || st.Size() == 0 {
			t.Errorf("eval did not write %s: %v", p, err)
		}
	}
}

func TestEvalUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no flags", []string{"eval"}, 2, "Usage: toolgate eval"},
		{"missing config file", []string{"eval", "--config", "nope.yaml", "--traces", "x.jsonl"}, 1, "nope.yaml"},
		{"missing traces", []string{"eval", "--config", "../../evals/scenarios/config.yaml", "--traces", "nope.jsonl"}, 1, "nope.jsonl"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(context.Background(), tt.args, &stdout, &stderr); code != tt.code || !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("run(%q) = %d, stderr %q; want %d and %q", tt.args, code, stderr.String(), tt.code, tt.want)
			}
		})
	}
}
