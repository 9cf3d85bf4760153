package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/toolgate/toolgate/policies"
)

// The policy command registers itself so that main.go's table need not
// change when subcommands are added in parallel.
func runPolicy(_ context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "check" && args[0] != "test") {
		fmt.Fprintln(stderr, "Usage: toolgate policy check [paths...]\n       toolgate policy test [-v] [-run NAME] [-timeout 5s] [paths...]")
		return 2
	}
	fs := flag.NewFlagSet("policy "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	verbose := fs.Bool("v", false, "print every case")
	runName := fs.String("run", "", "run only cases whose name contains this")
	timeout := fs.Duration("timeout", 5*time.Second, "time limit per case")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	paths := fs.Args()
	if len(paths) == 0 {
		paths = []string{"."}
	}
	if args[0] == "check" {
		if err := policies.Check(paths); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		fmt.Fprintln(stdout, "ok")
		return 0
	}
	ok, err := policies.RunTests(paths, stdout, policies.TestOptions{Verbose: *verbose, Run: *runName, Timeout: *timeout})
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if !ok {
		return 1
	}
	return 0
}
