package policies

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestSharedComprehensions checks which comprehensions get a slot shared
// across rules.
func TestSharedComprehensions(t *testing.T) {
	tests := []struct {
		name  string
		whens []string
		slots int
	}{
		{"same scan in two rules", []string{
			`history.exists(h, "credential" in h.labels)`,
			`history.exists(h, "credential" in h.labels) && call.name == "demo__y"`,
		}, 1},
		{"different constants", []string{
			`history.exists(h, h.name == "demo__a")`,
			`history.exists(h, h.name == "demo__b")`,
		}, 2},
		{"different types of constant", []string{
			`history.exists(h, dyn(size(h.labels)) == 1)`,
			`history.exists(h, dyn(size(h.labels)) == 1.0)`,
		}, 2},
		{"different variable names", []string{
			`history.exists(h, h.name == "demo__a")`,
			`history.exists(x, x.name == "demo__a")`,
		}, 2},
		{"outermost only", []string{
			`history.exists(x, history.exists(h, h.name == x.name))`,
			`history.exists(h, h.name == "demo__a") && flags.all(f, history.exists(h, h.name == f.kind))`,
		}, 3},
		{"inner scan of an outer variable", []string{
			`[1, 2].exists(call, type(call) == int && history.exists(h, h.name == "demo__x" + string(call)))`,
		}, 0},
		{"inner scan of decision variables only", []string{
			`[1, 2].exists(i, type(i) == int && history.exists(h, h.name == call.name))`,
		}, 1},
	}
	env, err := newCELEnv(&functions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			memo := &memoSlots{byKey: map[string]int{}}
			for _, w := range tt.whens {
				checked, iss := env.Compile(w)
				if iss.Err() != nil {
					t.Fatalf("Compile(%q): %v", w, iss.Err())
				}
				memo.find(checked.NativeRep(), checked.NativeRep().Expr(), nil, map[int64]int{})
			}
			if len(memo.byKey) != tt.slots {
				t.Errorf("find: %d shared comprehensions; want %d", len(memo.byKey), tt.slots)
			}
		})
	}
	// Rules with cost tracking share nothing.
	set := mustCompile(t, "rules:\n  - id: r\n    action: deny\n    message: m\n    when: call.args.exists(k, history.exists(h, h.name == k))\n")
	if set.nSlots != 0 {
		t.Errorf("Compile(tracked rule): %d shared comprehensions; want 0", set.nSlots)
	}
}

// TestSharedComprehensionsDecide checks that rules sharing comprehensions
// and history calls decide exactly as the same rules evaluated one by one
// with cost tracking, decision after decision.
func TestSharedComprehensionsDecide(t *testing.T) {
	const extra = `
  - id: x1
    action: deny
    message: credential then send
    when: history.exists(h, "credential" in h.labels) && "external_send" in call.labels
  - id: x2
    action: require_approval
    message: credential
    when: history.exists(h, "credential" in h.labels) && session.profile == "ci"
  - id: x3
    action: deny
    message: outer variable
    when: '[1, 2].exists(call, history.exists(h, h.name == "demo__x" + string(call)))'
  - id: x6
    action: deny
    message: inner scan
    when: 'history.exists(x, history.exists(h, h.name == x.name + "2"))'
  - id: x4
    action: deny
    message: repeated denials
    when: history.countSince(duration("10m"), "demo__*", "deny") >= 2 || history.filter(h, h.decision == "deny").size() > 5
  - id: x5
    action: deny
    message: since a time
    when: history.countSince(now - duration("30s"), "*") > 40 && history.countSince(now - duration("30s"), "*") < 1000
`
	set := mustCompile(t, string(genPack(50))+extra)
	if set.nSlots == 0 {
		t.Fatal("Compile: no shared comprehensions")
	}
	tracked := *set
	tracked.rules = nil
	for _, r := range set.rules {
		c := *r
		c.fast = nil
		tracked.rules = append(tracked.rules, &c)
	}
	hist := func(n int, name, decision string, labels ...string) []HistoryEntry {
		h := make([]HistoryEntry, n)
		for i := range h {
			h[i] = HistoryEntry{Name: name, Decision: decision, Time: t0.Add(time.Duration(i-n) * time.Second), Labels: labels}
		}
		return h
	}
	bench := benchInput()
	inputs := []*Input{
		bench,
		{Call: bench.Call, Session: Session{Profile: "ci"}, History: hist(256, "demo__echo", "allow", "external_send"), Now: t0},
		{Call: bench.Call, Session: Session{Profile: "ci"}, History: hist(10, "demo__read_secret", "deny", "credential"), Now: t0},
		{Call: call("demo__y", `{}`), History: append(hist(3, "demo__x2", "deny"), hist(2, "demo__list_files", "allow")...), Now: t0},
		{Call: call("demo__y", `{}`), History: hist(50, "demo__x1", "allow"), Now: t0},
		{Call: call("demo__y", `{}`), Now: t0},
	}
	for round := range 2 {
		for i, in := range inputs {
			got, want := set.Decide(in), tracked.Decide(in)
			if got.Action != want.Action || got.Rule != want.Rule ||
				!slices.Equal(got.Matched, want.Matched) || !slices.Equal(got.WouldHave, want.WouldHave) ||
				!slices.Equal(got.Errors, want.Errors) {
				t.Errorf("round %d input %d: Decide = %s by %q, matched %v, would have %v, errors %v; want %s by %q, matched %v, would have %v, errors %v",
					round, i, got.Action, got.Rule, got.Matched, got.WouldHave, got.Errors,
					want.Action, want.Rule, want.Matched, want.WouldHave, want.Errors)
			}
		}
	}
}

// TestHistoryCallsRemembered checks that history functions called with
// different arguments in one decision each give their own result.
func TestHistoryCallsRemembered(t *testing.T) {
	var whens = []struct {
		id, when string
		holds    bool
	}{
		{"count-x", `history.countSince(duration("10m"), "demo__x*") == 3`, true},
		{"count-all", `history.countSince(duration("10m"), "*") == 5`, true},
		{"count-allow", `history.countSince(duration("10m"), "*", "allow") == 2`, true},
		{"count-deny", `history.countSince(duration("10m"), "*", "deny") == 3`, true},
		{"count-2s", `history.countSince(duration("2s"), "*") == 4`, true},
		{"count-since", `history.countSince(now - duration("2s"), "*", "allow") == 2`, true},
		{"count-10m-again", `history.countSince(duration("10m"), "*") == 4`, false},
		{"seq-x-list", `history.sequence(["demo__x2", "demo__list_files"])`, true},
		{"seq-list-x", `history.sequence(["demo__list_files", "demo__x2"])`, false},
		{"seq-x", `history.sequence(["demo__x2"])`, true},
		{"seq-x-x-x-x", `history.sequence(["demo__x2", "demo__x2", "demo__x2", "demo__x2"])`, false},
		{"seq-derived", `history.filter(h, h.decision == "allow").sequence(["demo__x2"])`, false},
	}
	var b strings.Builder
	b.WriteString("rules:\n")
	var want []string
	for _, w := range whens {
		fmt.Fprintf(&b, "  - id: %s\n    action: deny\n    mode: shadow\n    message: m\n    when: '%s'\n", w.id, w.when)
		if w.holds {
			want = append(want, w.id)
		}
	}
	set := mustCompile(t, b.String())
	hist := []HistoryEntry{
		{Name: "demo__x2", Decision: "deny", Time: t0.Add(-3 * time.Second)},
		{Name: "demo__x2", Decision: "deny", Time: t0.Add(-2 * time.Second)},
		{Name: "demo__x2", Decision: "deny", Time: t0.Add(-time.Second)},
		{Name: "demo__list_files", Decision: "allow", Time: t0.Add(-2 * time.Second)},
		{Name: "demo__list_files", Decision: "allow", Time: t0.Add(-time.Second)},
	}
	d := set.Decide(&Input{Call: call("demo__y", `{}`), History: hist, Now: t0})
	var got []string
	for _, r := range d.WouldHave {
		got = append(got, r.ID)
	}
	if !slices.Equal(got, want) || len(d.Errors) != 0 {
		t.Errorf("Decide: would have %v, errors %v; want %v", got, d.Errors, want)
	}
}
