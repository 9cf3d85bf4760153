package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/toolgate/toolgate/internal/bench"
)

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	levels := fs.String("concurrency", "1,8,64", "comma-separated numbers of concurrent clients")
	duration := fs.Duration("duration", 5*time.Second, "length of one measured phase")
	rounds := fs.Int("rounds", 3, "direct/gateway pairs per concurrency level")
	redisURL := fs.String("redis", "", "keep sessions in this Redis (redis://host:port/db); default in memory")
	var policyPaths stringList
	fs.Var(&policyPaths, "policies", "policy file or folder to load (repeatable)")
	detectors := fs.Bool("detectors", false, "turn the call-chain detectors on")
	tracing := fs.Bool("tracing", false, "export every span (OTLP/HTTP batches) to a receiver inside the bench")
	auditOn := fs.Bool("audit", false, "record every decision (the Redis stream with -redis, which always audits; else a file)")
	procs := fs.Int("procs", 0, "run the gateway with this GOMAXPROCS (runtime.max_procs); 0: Go's default")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var conc []int
	for _, s := range strings.Split(*levels, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Fprintf(stderr, "toolgate bench: -concurrency: %q is not a positive number\n", s)
			return 2
		}
		conc = append(conc, n)
	}
	var extra string
	if *procs > 0 {
		extra = fmt.Sprintf("runtime:\n  max_procs: %d\n", *procs)
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, "toolgate bench:", err)
		return 1
	}
	_, err = bench.Run(ctx, bench.Options{
		Concurrency: conc,
		Duration:    *duration,
		Rounds:      *rounds,
		RedisURL:    *redisURL,
		Policies:    policyPaths,
		Detectors:   *detectors,
		Tracing:     *tracing,
		Audit:       *auditOn,
		ExtraConfig: extra,
		Gateway: func(configPath string) *exec.Cmd {
			return exec.Command(exe, "serve", "--config", configPath)
		},
	}, stdout)
	if err != nil {
		fmt.Fprintln(stderr, "toolgate bench:", err)
		return 1
	}
	return 0
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }
