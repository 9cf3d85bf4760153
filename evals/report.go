package evals

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/toolgate/toolgate/policies"
)

// Report is everything a replay produced: the scores and one record per
// trace. Its JSON form is what `toolgate eval --json` writes.
type Report struct {
	Mode    string        `json:"mode"`
	Config  string        `json:"config,omitempty"`
	Summary Summary       `json:"scores"`
	Traces  []TraceRecord `json:"traces"`
}

// TraceRecord is one trace in the JSON report: enough to recompute every
// score.
type TraceRecord struct {
	TraceResult
	Outcome
}

// NewReport scores a replay.
func NewReport(r *Result, configPath string) *Report {
	rep := &Report{Mode: r.Mode, Config: configPath, Summary: Summarize(r)}
	rep.Traces = make([]TraceRecord, len(r.Traces))
	for i, tr := range r.Traces {
		rep.Traces[i] = TraceRecord{TraceResult: tr, Outcome: rep.Summary.Outcomes[i]}
	}
	return rep
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", " ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("write JSON report: %w", err)
	}
	return nil
}

func pct(r Rate) string {
	if r.Of == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f%% (%d/%d)", 100*r.Share(), r.N, r.Of)
}

// WriteMarkdown writes the report for people: the headline, the
// breakdown by suite and agent, rules and detectors, stop steps, latency.
func (r *Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	s := r.Summary
	fmt.Fprintf(&b, "# toolgate eval\n\n")
	fmt.Fprintf(&b, "%d traces replayed (%s mode)", s.Total.Traces, r.Mode)
	if r.Config != "" {
		fmt.Fprintf(&b, " with `%s`", r.Config)
	}
	b.WriteString(".\n\n")
	fmt.Fprintf(&b, "- **Attacks stopped** at or before the harmful call: **%s**\n", pct(s.Total.AttacksStopped))
	fmt.Fprintf(&b, "- **Benign sessions interrupted** (a call denied or the session revoked): **%s**; user tasks: %s\n", pct(s.Total.BenignInterrupted), pct(s.Total.BenignTasksInterrupted))
	fmt.Fprintf(&b, "- **Benign sessions with a call held for approval** (a person is asked): **%s**; user tasks: %s\n", pct(s.Total.BenignHeld), pct(s.Total.BenignTasksHeld))
	fmt.Fprintf(&b, "- Attacks the agent ignored, interrupted anyway: %s; held: %s\n", pct(s.Total.IgnoredAttacksInterrupted), pct(s.Total.IgnoredAttacksHeld))
	fmt.Fprintf(&b, "- Decision latency: p50 %.0f µs, p99 %.0f µs\n\n", s.Total.LatencyP50, s.Total.LatencyP99)

	b.WriteString("| group | traces | attacks stopped | benign interrupted | benign held for approval | benign tasks interrupted | benign tasks held | ignored attacks interrupted | ignored attacks held | p50 µs | p99 µs |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	row := func(name string, g Scores) {
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s | %s | %s | %s | %.0f | %.0f |\n", name, g.Traces, pct(g.AttacksStopped),
			pct(g.BenignInterrupted), pct(g.BenignHeld), pct(g.BenignTasksInterrupted), pct(g.BenignTasksHeld),
			pct(g.IgnoredAttacksInterrupted), pct(g.IgnoredAttacksHeld), g.LatencyP50, g.LatencyP99)
	}
	for _, k := range sortedKeys(s.BySuite) {
		row("suite "+k, s.BySuite[k])
	}
	for _, k := range sortedKeys(s.ByAgent) {
		row("agent "+k, s.ByAgent[k])
	}
	row("**all**", s.Total)

	b.WriteString("\n## Rules and detectors\n\n")
	b.WriteString("Calls refused or held per rule (all traces):\n\n| rule | calls | per suite |\n|---|---:|---|\n")
	for _, k := range byCount(s.Total.RuleHits) {
		fmt.Fprintf(&b, "| `%s` | %d | %s |\n", k, s.Total.RuleHits[k], perGroup(s.BySuite, func(g Scores) int { return g.RuleHits[k] }))
	}
	b.WriteString("\nDetector flags raised (all calls):\n\n| flag | calls | per suite |\n|---|---:|---|\n")
	for _, k := range byCount(s.Total.DetectorHits) {
		fmt.Fprintf(&b, "| `%s` | %d | %s |\n", k, s.Total.DetectorHits[k], perGroup(s.BySuite, func(g Scores) int { return g.DetectorHits[k] }))
	}
	b.WriteString("\nDecisions: ")
	var ds []string
	for _, a := range []policies.Action{policies.ActionAllow, policies.ActionNarrow, policies.ActionRequireApproval, policies.ActionDeny, policies.ActionRevoke} {
		ds = append(ds, fmt.Sprintf("%s %d", a, s.Total.Decisions[a]))
	}
	b.WriteString(strings.Join(ds, ", ") + ".\n")

	b.WriteString("\n## When attacks were stopped\n\n")
	fmt.Fprintf(&b, "Stopped by a revoke before the harmful call: %d of %d stopped.\n\n", s.Total.StoppedEarly, s.Total.AttacksStopped.N)
	b.WriteString("| step (0-based call) | attacks stopped there |\n|---:|---:|\n")
	steps := make([]int, 0, len(s.Total.StopSteps))
	for k := range s.Total.StopSteps {
		steps = append(steps, k)
	}
	sort.Ints(steps)
	for _, k := range steps {
		fmt.Fprintf(&b, "| %d | %d |\n", k, s.Total.StopSteps[k])
	}

	b.WriteString("\n## Trade-off of a single risk threshold\n\n")
	b.WriteString("What refusing every call whose session risk (from the detectors) reached a threshold would do, instead of the rules:\n\n")
	b.WriteString("| risk ≥ | attacks stopped | benign interrupted |\n|---:|---:|---:|\n")
	for _, p := range s.Tradeoff {
		fmt.Fprintf(&b, "| %.1f | %.1f%% | %.1f%% |\n", p.Threshold, 100*p.AttacksStopped, 100*p.BenignInterrupted)
	}
	_, err := io.WriteString(w, b.String())
	if err != nil {
		return fmt.Errorf("write Markdown report: %w", err)
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// byCount sorts keys by count, highest first, then by name.
func byCount(m map[string]int) []string {
	out := sortedKeys(m)
	sort.SliceStable(out, func(i, j int) bool { return m[out[i]] > m[out[j]] })
	return out
}

func perGroup(groups map[string]Scores, n func(Scores) int) string {
	var parts []string
	for _, k := range sortedKeys(groups) {
		if v := n(groups[k]); v > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, v))
		}
	}
	return strings.Join(parts, ", ")
}
