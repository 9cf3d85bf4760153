package policies

import (
	"fmt"
	"reflect"
	"sync"
	"testing"
)

// TestDecideReusedState checks that decisions of one set, which reuse
// evaluation states, decide as a fresh set does: inputs of different
// history lengths, flags and calls alternate, so a value left over from
// a longer or different decision would show.
func TestDecideReusedState(t *testing.T) {
	const pack = `rules:
  - id: long
    action: deny
    message: rule long
    when: history.size() >= 3 && history[2].name == "demo__c"
  - id: any_b
    action: deny
    message: rule any_b
    when: history.exists(h, h.name == "demo__b") && call.name == "demo__send"
  - id: args
    action: deny
    message: rule args
    when: history.exists(h, has(h.args.n) && h.args.n > 5)
  - id: flagged
    action: deny
    message: rule flagged
    when: flags.exists(f, f.kind == "burst") && flags.size() == 1
  - id: shadow
    action: deny
    message: rule shadow
    mode: shadow
    when: call.args.size() > 1 && session.risk > 0.5
`
	entry := func(name, args string) HistoryEntry {
		c := call(name, args)
		return HistoryEntry{Server: c.Server, Tool: c.Tool, Name: c.Name, Args: c.Args, Decision: "allow", Time: t0}
	}
	inputs := []*Input{
		{Call: call("demo__send", `{"to":"a","b":2}`), Session: Session{ID: "s1", Risk: 0.9}, Now: t0,
			History: []HistoryEntry{entry("demo__a", `{"n":1}`), entry("demo__b", `{}`), entry("demo__c", `{"n":9}`), entry("demo__d", `{}`)},
			Flags:   []Flag{{Kind: "burst"}}},
		{Call: call("demo__read", `{}`), Session: Session{ID: "s2"}, Now: t0,
			History: []HistoryEntry{entry("demo__b", `{"n":2}`)}},
		{Call: call("demo__send", `{"x":1}`), Session: Session{ID: "s3", Risk: 0.1}, Now: t0,
			Flags: []Flag{{Kind: "burst"}, {Kind: "fan_out"}}},
		{Call: call("demo__send", `{}`), Session: Session{ID: "s4"}, Now: t0,
			History: []HistoryEntry{entry("demo__x", `{"n":6}`), entry("demo__b", `{}`), entry("demo__c", `{}`)}},
	}
	want := make([]Decision, len(inputs))
	for i, in := range inputs {
		want[i] = mustCompile(t, pack).Decide(in)
	}
	set := mustCompile(t, pack)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for round := range 50 {
				i := (g + round) % len(inputs)
				if err := sameDecision(set.Decide(inputs[i]), want[i]); err != nil {
					t.Errorf("Decide(input %d) after other decisions: %v", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func sameDecision(got, want Decision) error {
	got.Elapsed, want.Elapsed = 0, 0
	if !reflect.DeepEqual(got, want) {
		return fmt.Errorf("got %+v; want %+v", got, want)
	}
	return nil
}
