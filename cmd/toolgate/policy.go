package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/policies"
)

// The policy command registers itself so that main.go's table need not
// change when subcommands are added in parallel.
func runPolicy(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && (args[0] == "status" || args[0] == "reload") {
		return runPolicyAdmin(ctx, args[0], args[1:], stdout, stderr)
	}
	if len(args) == 0 || (args[0] != "check" && args[0] != "test") {
		fmt.Fprintln(stderr, "Usage: toolgate policy check [paths...]\n       toolgate policy test [-v] [-run NAME] [-timeout 5s] [paths...]\n"+
			"       toolgate policy status [--admin-url URL] [--json]   (the running gateway's policies)\n"+
			"       toolgate policy reload [--admin-url URL] [--json]   (reload them; a broken set is refused)")
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

// runPolicyAdmin shows or reloads the running gateway's policies over the
// admin API.
func runPolicyAdmin(ctx context.Context, sub string, args []string, stdout, stderr io.Writer) int {
	c := newAdminCmd("policy "+sub, "policy "+sub+" [--admin-url URL] [--json]", 0, 0, stdout, stderr)
	if _, code := c.parse(args); code >= 0 {
		return code
	}
	if sub == "status" {
		return c.call(ctx, func(ctx context.Context, ac *gateway.AdminClient) (any, error) {
			return ac.PolicyStatus(ctx)
		}, func(w io.Writer, v any) {
			st := v.(*gateway.PolicyStatus)
			if !st.Configured || st.Status == nil {
				fmt.Fprintln(w, st.Message)
				return
			}
			printPolicyStatus(w, st.Status)
		})
	}
	return c.call(ctx, func(ctx context.Context, ac *gateway.AdminClient) (any, error) {
		return ac.ReloadPolicies(ctx)
	}, func(w io.Writer, v any) {
		r := v.(*gateway.ReloadResult)
		if r.Changed {
			fmt.Fprintf(w, "policies reloaded: version %s, %d rules\n", r.Status.Version, r.Status.Rules)
		} else {
			fmt.Fprintf(w, "policies unchanged: version %s, %d rules\n", r.Status.Version, r.Status.Rules)
		}
	})
}

func printPolicyStatus(w io.Writer, st *policies.Status) {
	tw := newTable(w)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("Version", st.Version)
	row("Rules", fmt.Sprint(st.Rules))
	row("Loaded", shortTime(st.LoadedAt))
	row("Last reload", shortTime(st.LastReload))
	row("Reloads", fmt.Sprintf("%d ok, %d failed", st.Reloads, st.Failures))
	row("Last error", orDash(st.LastError))
	_ = tw.Flush()
	fmt.Fprintln(w, "Files:")
	for _, f := range st.Files {
		fmt.Fprintln(w, "  "+f)
	}
}
