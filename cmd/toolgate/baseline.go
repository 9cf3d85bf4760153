package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/toolgate/toolgate/policies"
)

// runBaseline learns a call-chain baseline from recorded benign sessions:
//
//	toolgate baseline learn --traces FILE [--traces FILE...] --out baseline.json [--profile NAME]
func runBaseline(_ context.Context, args []string, stdout, stderr io.Writer) int {
	const usage = "Usage: toolgate baseline learn --traces FILE... --out baseline.json [--profile NAME] [--namespace=false]"
	if len(args) == 0 || args[0] != "learn" {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	fs := flag.NewFlagSet("baseline learn", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var files []string
	fs.Func("traces", "JSONL trace file, one session per line (repeat the flag, or list more files after the flags)", func(s string) error {
		files = append(files, s)
		return nil
	})
	out := fs.String("out", "", "where to write the baseline (JSON)")
	profile := fs.String("profile", "", "profile to learn into (default: each trace's suite)")
	namespace := fs.Bool("namespace", true, "name tools <suite>__<tool>, as the gateway namespaces them")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	files = append(files, fs.Args()...)
	if len(files) == 0 || *out == "" {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	var traces []policies.BaselineTrace
	skipped := 0
	for _, f := range files {
		tr, n, err := readBaselineTraces(f, *profile, *namespace)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		traces = append(traces, tr...)
		skipped += n
	}
	b := policies.LearnBaseline(traces)
	data, err := b.Marshal()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if err := os.WriteFile(*out, data, 0o644); err != nil {
		fmt.Fprintf(stderr, "write baseline: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "learned %d benign sessions (%d others skipped) into %s:", len(traces), skipped, *out)
	for name, p := range b.Profiles {
		fmt.Fprintf(stdout, " %s (%d sessions, %d tools)", name, p.Traces, len(p.Tools))
	}
	fmt.Fprintln(stdout)
	return 0
}

// traceLine is the part of a recorded trace the baseline needs.
type traceLine struct {
	ID    string `json:"id"`
	Suite string `json:"suite"`
	Label string `json:"label"`
	Calls []struct {
		Tool   string          `json:"tool"`
		Args   json.RawMessage `json:"args"`
		Result json.RawMessage `json:"result"` // a string, or any JSON value

	} `json:"calls"`
}

// readBaselineTraces reads the benign sessions of a JSONL trace file and
// returns them with the number of other lines skipped.
func readBaselineTraces(path, profile string, namespace bool) ([]policies.BaselineTrace, int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("read traces: %w", err)
	}
	defer f.Close()
	var out []policies.BaselineTrace
	skipped := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		var tl traceLine
		if err := json.Unmarshal([]byte(text), &tl); err != nil {
			return nil, 0, fmt.Errorf("read traces: %s:%d: %w", path, line, err)
		}
		if tl.Label != "benign" {
			skipped++
			continue
		}
		tr := policies.BaselineTrace{Profile: profile}
		if tr.Profile == "" {
			tr.Profile = tl.Suite
		}
		if tr.Profile == "" {
			return nil, 0, fmt.Errorf("read traces: %s:%d (id %q): no suite: pass --profile", path, line, tl.ID)
		}
		for _, c := range tl.Calls {
			name := c.Tool
			if namespace && tl.Suite != "" {
				name = tl.Suite + "__" + c.Tool
			}
			tr.Calls = append(tr.Calls, policies.BaselineCall{Tool: name, Args: c.Args, Result: resultText(c.Result)})
		}
		out = append(out, tr)
	}
	if err := sc.Err(); err != nil {
		return nil, 0, fmt.Errorf("read traces: %s: %w", path, err)
	}
	return out, skipped, nil
}

// resultText is a recorded result as the text a tool would return: a JSON
// string unquoted, anything else as its JSON.
func resultText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(raw)
}
