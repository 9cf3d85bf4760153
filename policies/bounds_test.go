package policies

import (
	"testing"
)

// TestBoundedRules checks that rules proven within their limit run without
// cost tracking only for inputs within the bounds, and decide the same
// either way.
func TestBoundedRules(t *testing.T) {
	const pack = `rules:
  - id: cred
    action: deny
    message: credential seen
    when: history.exists(h, "credential" in h.labels)
  - id: args
    action: deny
    message: big args
    when: call.args.exists(k, k == "zzz")
`
	set, err := Compile([]SourceFile{{Name: "p.yaml", Data: []byte(pack)}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if set.rules[0].fast == nil || set.rules[0].bound == 0 {
		t.Errorf("rule cred: no untracked program; want one (bounded history scan)")
	}
	if set.rules[1].fast != nil {
		t.Errorf("rule args: untracked program; want none (call.args has no bound)")
	}
	hist := func(n int, credAt int) []HistoryEntry {
		h := make([]HistoryEntry, n)
		for i := range h {
			h[i] = HistoryEntry{Name: "demo__a", Decision: "allow", Time: t0, Labels: []string{"external_send"}}
		}
		if credAt >= 0 {
			h[credAt].Labels = []string{"credential"}
		}
		return h
	}
	tests := []struct {
		name    string
		history []HistoryEntry
		want    Action
		fast    bool
	}{
		{"within bounds, no match", hist(boundHistory, -1), ActionAllow, true},
		{"within bounds, match", hist(boundHistory, boundHistory-1), ActionDeny, true},
		{"over the history bound, no match", hist(boundHistory+1, -1), ActionAllow, false},
		{"over the history bound, match", hist(boundHistory+1, boundHistory), ActionDeny, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := &Input{Call: call("demo__y", `{}`), History: tt.history, Now: t0}
			d := set.Decide(in)
			if d.Action != tt.want || len(d.Errors) != 0 {
				t.Fatalf("Decide = %s, errors %+v; want %s", d.Action, d.Errors, tt.want)
			}
			if got := withinBounds(in); got != tt.fast {
				t.Errorf("withinBounds = %v; want %v", got, tt.fast)
			}
			// A bounded rule counts at its bound; a tracked one at its
			// measured cost, which is below the bound for this rule.
			if tt.fast && d.Cost < set.rules[0].bound {
				t.Errorf("Decide.Cost = %d; want at least the bound %d", d.Cost, set.rules[0].bound)
			}
		})
	}
}

// TestBoundedRuleKeepsLimit checks that a limit below a rule's bound makes
// it run tracked, so that the limit still stops it.
func TestBoundedRuleKeepsLimit(t *testing.T) {
	const pack = `rules:
  - id: cred
    action: deny
    message: credential seen
    when: history.exists(h, "credential" in h.labels)
`
	set, err := Compile([]SourceFile{{Name: "p.yaml", Data: []byte(pack)}}, Options{CostLimit: 50})
	if err != nil {
		t.Fatal(err)
	}
	if set.rules[0].fast != nil {
		t.Fatalf("rule cred: untracked program with a limit of 50; want none")
	}
	h := make([]HistoryEntry, 100)
	for i := range h {
		h[i] = HistoryEntry{Name: "demo__a", Time: t0, Labels: []string{"x"}}
	}
	d := set.Decide(&Input{Call: call("demo__y", `{}`), History: h, Now: t0})
	if d.Action != ActionDeny || len(d.Errors) == 0 || d.Errors[0].Kind != ErrCostLimit {
		t.Fatalf("Decide = %s, errors %+v; want deny with a %s error", d.Action, d.Errors, ErrCostLimit)
	}
}
