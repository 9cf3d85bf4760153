package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/toolgate/toolgate/evals"
	"github.com/toolgate/toolgate/internal/config"
)

// runEval replays recorded agent sessions through the decision path of a
// config and scores its policies:
//
//	toolgate eval --config FILE --traces FILE... [--report out.md] [--html out.html] [--json out.json] [--e2e]
func runEval(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	const usage = "Usage: toolgate eval --config FILE --traces FILE... [--report out.md] [--html out.html] [--json out.json] [--e2e] [--quiet]"
	fs := flag.NewFlagSet("eval", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "toolgate config file: tools servers (one per suite) with labels, profiles, policies")
	var files []string
	fs.Func("traces", "JSONL trace file, one session per line (repeat the flag, or list more files after the flags)", func(s string) error {
		files = append(files, s)
		return nil
	})
	mdPath := fs.String("report", "", "write the Markdown report here (default: print it)")
	htmlPath := fs.String("html", "", "write a self-contained HTML report here")
	jsonPath := fs.String("json", "", "write scores and one record per trace as JSON here")
	e2e := fs.Bool("e2e", false, "run end to end: a real MCP client drives a real gateway over HTTP in front of replay tool servers")
	quiet := fs.Bool("quiet", false, "no progress bar")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	files = append(files, fs.Args()...)
	if *cfgPath == "" || len(files) == 0 {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	traces, err := evals.ReadTraces(files...)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	opts := evals.Options{}
	if !*quiet {
		opts.Progress = stderr
	}
	run := evals.Replay
	if *e2e {
		run = evals.ReplayEndToEnd
	}
	res, err := run(ctx, cfg, traces, opts)
	if err != nil {
		fmt.Fprintf(stderr, "eval: %v\n", err)
		return 1
	}
	rep := evals.NewReport(res, *cfgPath)
	write := func(path string, f func(io.Writer) error) error {
		if path == "" {
			return nil
		}
		out, err := os.Create(path)
		if err != nil {
			return err
		}
		if err := f(out); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	}
	for _, w := range []struct {
		path string
		f    func(io.Writer) error
	}{{*mdPath, rep.WriteMarkdown}, {*htmlPath, rep.WriteHTML}, {*jsonPath, rep.WriteJSON}} {
		if err := write(w.path, w.f); err != nil {
			fmt.Fprintf(stderr, "eval: %v\n", err)
			return 1
		}
	}
	if *mdPath == "" {
		if err := rep.WriteMarkdown(stdout); err != nil {
			fmt.Fprintf(stderr, "eval: %v\n", err)
			return 1
		}
	} else {
		rep.WriteSummary(stdout)
	}
	return 0
}
