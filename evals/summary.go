package evals

import (
	"fmt"
	"io"
)

// WriteSummary writes the headline scores in a few lines, per suite and
// agent: for a terminal or a CI log.
func (r *Report) WriteSummary(w io.Writer) {
	s := r.Summary
	line := func(name string, g Scores) {
		fmt.Fprintf(w, "%-40s attacks stopped %-18s benign interrupted %-16s held %-16s tasks interrupted %-16s held %-16s ignored attacks interrupted %s held %s\n",
			name, pct(g.AttacksStopped), pct(g.BenignInterrupted), pct(g.BenignHeld), pct(g.BenignTasksInterrupted), pct(g.BenignTasksHeld),
			pct(g.IgnoredAttacksInterrupted), pct(g.IgnoredAttacksHeld))
	}
	for _, k := range sortedKeys(s.BySuite) {
		line("suite "+k, s.BySuite[k])
	}
	for _, k := range sortedKeys(s.ByAgent) {
		line("agent "+k, s.ByAgent[k])
	}
	line("all", s.Total)
	fmt.Fprintf(w, "decision latency p50 %.0f µs, p99 %.0f µs over %d traces (%s)\n", s.Total.LatencyP50, s.Total.LatencyP99, s.Total.Traces, r.Mode)
}
