package policies

import (
	"strings"
	"testing"
	"time"
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

// TestBoundsRemembered checks that the bounds a decision remembers of a
// session's entries never make it skip an entry it has not proven: the
// remembered answer equals the full check at every step.
func TestBoundsRemembered(t *testing.T) {
	set := mustCompile(t, `rules:
  - id: cred
    action: deny
    message: credential seen
    when: history.exists(h, "credential" in h.labels)
`)
	long := strings.Repeat("x", boundString+1)
	entries := func(seqs ...int64) []HistoryEntry {
		h := make([]HistoryEntry, len(seqs))
		for i, s := range seqs {
			h[i] = HistoryEntry{Name: "demo__a", Decision: "allow", Time: t0, Labels: []string{"x"}, Seq: s}
		}
		return h
	}
	seqs := func(from, to int64) []int64 {
		var out []int64
		for s := from; s <= to; s++ {
			out = append(out, s)
		}
		return out
	}
	sess := Session{ID: "s", Started: t0.Add(-time.Hour)}
	other := Session{ID: "s", Started: t0.Add(-time.Minute)} // re-created with the same ID
	tagged := entries(seqs(1, 10)...)
	tagged[4].ResultTags = make([]string, boundList+1)
	longName := entries(seqs(1, 11)...)
	longName[10].Name = long
	gap := entries(append(seqs(1, 10), 13)...)
	gap[10].Labels = []string{long}
	reused := entries(seqs(1, 10)...)
	reused[2].Server = long
	steps := []struct {
		name    string
		session Session
		history []HistoryEntry
		want    bool
	}{
		{"first decision", sess, entries(seqs(1, 10)...), true},
		{"new entry over the bound", sess, longName, false},
		{"new entry within", sess, entries(seqs(1, 11)...), true},
		{"tags of a proven entry grow", sess, tagged, false},
		{"oldest dropped", sess, entries(seqs(3, 11)...), true},
		{"unseen Seq in a gap", sess, gap, false},
		{"same ID, new session", other, reused, false},
		{"same ID, new session, within", other, entries(seqs(1, 10)...), true},
		{"no Seqs", sess, func() []HistoryEntry { h := entries(seqs(1, 3)...); h[1].Seq = 0; h[1].Tool = long; return h }(), false},
	}
	for _, s := range steps {
		in := &Input{Call: call("demo__y", `{}`), Session: s.session, History: s.history, Now: t0}
		st := newEvalState(in, set.adapter, set.nSlots, set.scans)
		got := st.withinBounds()
		st.release()
		if got != s.want || got != withinBounds(in) {
			t.Errorf("%s: withinBounds = %v; want %v (full check %v)", s.name, got, s.want, withinBounds(in))
		}
	}
}
