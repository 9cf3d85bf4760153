// Command toolgate runs the toolgate gateway and its tools.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// command is one subcommand: run gets the arguments after its name.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

var commands = map[string]command{
	"agents":    {"lock, unlock or revoke an agent over the admin API (agents show|lock|unlock|revoke AGENT)", runAgents},
	"audit":     {"follow the audit stream of decisions and operator actions (audit tail --config FILE)", runAudit},
	"approvals": {"list, approve or reject calls waiting for approval (approvals ls|approve|reject)", runApprovals},
	"sessions":  {"list, show, narrow, freeze, resume or revoke sessions (sessions ls|show|narrow|freeze|resume|revoke)", runSessions},
	"baseline":  {"learn call-chain baselines from benign traces (baseline learn --traces FILE... --out FILE)", runBaseline},
	"bench":     {"measure what the gateway adds to a tool call", runBench},
	"connect":   {"stdio bridge to a gateway for agent hosts that launch only local servers (connect --url URL --credential-env NAME)", runConnect},
	"demo":      {"serve the built-in demo tool server over Streamable HTTP (demo --listen ADDR)", runDemo},
	"eval":      {"replay recorded agent sessions and score the policies (eval --config FILE --traces FILE...)", runEval},
	"policy":    {"check or test policy files, or show and reload the gateway's (policy check|test|status|reload)", runPolicy},
	"serve":     {"run the gateway", runServe},
	"version":   {"print the version", runVersion},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "toolgate: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	return cmd.run(ctx, args[1:], stdout, stderr)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: toolgate <command> [flags]\n\nCommands:")
	names := make([]string, 0, len(commands))
	for name := range commands {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintf(w, "  %-10s %s\n", name, commands[name].summary)
	}
	fmt.Fprintln(w, "\nRun 'toolgate <command> -h' for the flags of a command.")
}

func runVersion(_ context.Context, _ []string, stdout, _ io.Writer) int {
	fmt.Fprintln(stdout, "toolgate", version)
	return 0
}
