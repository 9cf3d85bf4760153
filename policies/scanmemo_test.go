package policies

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestScanRemembered checks which history scans have their per-entry
// results remembered across decisions.
func TestScanRemembered(t *testing.T) {
	tests := []struct {
		when string
		want int // scans remembered
	}{
		{`history.exists(h, "credential" in h.labels)`, 1},
		{`history.all(h, h.decision == "allow" && h.server == "demo")`, 1},
		{`history.exists_one(h, h.name == "demo__x" || h.tool == "x")`, 1},
		{`history.exists(h, h.args.path.startsWith("/etc") && h.time > timestamp("2026-01-01T00:00:00Z"))`, 1},
		{`history.exists(h, h.labels.exists(h, h == "a"))`, 1},
		{`[1].exists(x, history.exists(h, h.name == "a"))`, 1},
		{`history.exists(h, "x" in h.result_tags)`, 0},
		{`history.exists(h, has(h.result_tags))`, 0},
		{`history.exists(h, h.name == call.name)`, 0},
		{`history.exists(h, h.time > now - duration("1m"))`, 0},
		{`history.exists(h, h.name == session.id)`, 0},
		{`history.exists(h, flags.exists(f, f.kind == h.name))`, 0},
		{`history.exists(h, h.name == agent.sub)`, 0},
		{`history.exists(h, tainted(h.name))`, 0},
		{`history.exists(h, h == history[0])`, 0},
		{`history.exists(h, history.size() > 3 && h.name == "a")`, 0},
		{`[1].exists(x, history.exists(h, h.name == string(x)))`, 0},
		{`history.filter(h, h.name == "a").size() > 1`, 0},
		{`history.map(h, h.name).exists(n, n == "a")`, 0},
		{`history.exists(x, history.exists(h, h.name == x.name + "2"))`, 0},
		{`history.exists(x, x.name == "a" && history.exists(h, h.name == "b"))`, 1}, // the inner one
	}
	env, err := newCELEnv(&functions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		checked, iss := env.Compile(tt.when)
		if iss.Err() != nil {
			t.Fatalf("Compile(%q): %v", tt.when, iss.Err())
		}
		m := &memoSlots{}
		scans := map[int64]*scanEval{}
		m.findScans(checked.NativeRep(), checked.NativeRep().Expr(), nil, scans)
		if len(scans) != tt.want {
			t.Errorf("findScans(%q) = %d scans; want %d", tt.when, len(scans), tt.want)
		}
	}
}

// scanRules hold remembered scans of every kind, scans that must not be
// remembered, and scans whose predicate fails on some entries.
const scanRules = `rules:
  - id: exists
    action: deny
    message: m
    when: history.exists(h, "credential" in h.labels) && "external_send" in call.labels
  - id: all
    action: require_approval
    message: m
    when: history.all(h, h.decision == "allow")
  - id: one
    action: deny
    mode: shadow
    message: m
    when: history.exists_one(h, h.name == "demo__read_secret")
  - id: args
    action: deny
    mode: shadow
    message: m
    when: history.exists(h, h.args.path.startsWith("/etc"))
  - id: args-all
    action: deny
    mode: shadow
    message: m
    when: history.all(h, h.args.size() < 2 || h.time > timestamp("2026-03-02T09:59:50Z"))
  - id: nested
    action: deny
    mode: shadow
    message: m
    when: history.exists(h, h.labels.exists(l, l.startsWith("cred")) && h.decision == "deny")
  - id: tags
    action: deny
    mode: shadow
    message: m
    when: history.exists(h, "secret" in h.result_tags)
  - id: call
    action: deny
    mode: shadow
    message: m
    when: history.exists(h, h.name == call.name)
  - id: now
    action: deny
    mode: shadow
    message: m
    when: history.all(h, h.time > now - duration("20s"))
`

// scanSim generates the decisions of a few sessions: histories growing
// past the limit, sessions re-created with the same ID, result tags added
// to old entries.
type scanSim struct {
	rng      *rand.Rand
	sessions []*simSession
	now      time.Time
}

type simSession struct {
	id      string
	started time.Time
	seq     int64
	hist    []HistoryEntry
	noSeq   bool // an old caller: entries without Seq
}

func (s *scanSim) next(limit int) *Input {
	r := s.rng
	ss := s.sessions[r.IntN(len(s.sessions))]
	s.now = s.now.Add(time.Duration(1+r.IntN(3000)) * time.Millisecond)
	if r.IntN(25) == 0 {
		ss.started, ss.seq, ss.hist = s.now, 0, nil
	}
	if r.IntN(8) == 0 && len(ss.hist) > 0 {
		// The result of an old entry arrives: a copy, as earlier inputs
		// hold the old slice.
		ss.hist = slices.Clone(ss.hist)
		h := &ss.hist[r.IntN(len(ss.hist))]
		h.ResultTags = append(slices.Clone(h.ResultTags), "secret")
	}
	names := []string{"demo__read_file", "demo__read_secret", "demo__send", "demo__list"}
	args := []string{`{"path":"/etc/passwd"}`, `{"path":"/srv/x"}`, `{}`, `{"a":1,"b":2}`, `not json`}
	decisions := []string{"allow", "allow", "allow", "deny"}
	var labels []string
	if r.IntN(6) == 0 {
		labels = append(labels, "credential")
	}
	if r.IntN(3) == 0 {
		labels = append(labels, "external_send")
	}
	ss.seq++
	e := HistoryEntry{Server: "demo", Name: names[r.IntN(len(names))], Args: []byte(args[r.IntN(len(args))]),
		Decision: decisions[r.IntN(len(decisions))], Time: s.now, Labels: labels, Seq: ss.seq}
	if ss.noSeq {
		e.Seq = 0
	}
	ss.hist = append(ss.hist, e)
	if len(ss.hist) > limit {
		ss.hist = ss.hist[len(ss.hist)-limit:]
	}
	c := call(names[r.IntN(len(names))], `{}`)
	if r.IntN(2) == 0 {
		c.Labels = []string{"external_send"}
	}
	return &Input{
		Call:    c,
		Session: Session{ID: ss.id, Started: ss.started, Profile: "dev"},
		History: slices.Clip(ss.hist),
		Now:     s.now.Add(time.Millisecond),
	}
}

// TestScanMemoryDecide checks that decisions with remembered scans equal
// the same decisions evaluated with cost tracking and no memory, over
// random decisions of several sessions, sequential and concurrent.
func TestScanMemoryDecide(t *testing.T) {
	set := mustCompile(t, scanRules)
	if set.scans == nil || set.scans.nScans != 6 {
		t.Fatalf("Compile: scans = %+v; want 6 remembered", set.scans)
	}
	tracked := *set
	tracked.rules = nil
	for _, r := range set.rules {
		c := *r
		c.fast = nil
		tracked.rules = append(tracked.rules, &c)
	}
	for _, limit := range []int{5, 40, boundHistory} {
		t.Run(fmt.Sprint("limit ", limit), func(t *testing.T) {
			sim := &scanSim{rng: rand.New(rand.NewPCG(uint64(limit), 1)), now: t0}
			for i := range 4 {
				sim.sessions = append(sim.sessions, &simSession{id: fmt.Sprint("s", limit, "-", i), started: t0, noSeq: i == 3})
			}
			var inputs []*Input
			for range 600 {
				inputs = append(inputs, sim.next(limit))
			}
			want := make([]Decision, len(inputs))
			for i, in := range inputs {
				want[i] = tracked.Decide(in)
			}
			check := func(i int, got Decision) {
				w := want[i]
				if got.Action != w.Action || got.Rule != w.Rule || !slices.Equal(got.Matched, w.Matched) ||
					!slices.Equal(got.WouldHave, w.WouldHave) || !slices.Equal(got.Errors, w.Errors) {
					t.Errorf("Decide(input %d) = %s by %q, matched %v, would have %v, errors %v; want %s by %q, matched %v, would have %v, errors %v",
						i, got.Action, got.Rule, got.Matched, got.WouldHave, got.Errors,
						w.Action, w.Rule, w.Matched, w.WouldHave, w.Errors)
				}
			}
			for i, in := range inputs {
				check(i, set.Decide(in))
			}
			// Again, in parallel and out of order, on the same memory.
			var wg sync.WaitGroup
			results := make([]Decision, len(inputs))
			for g := range 4 {
				wg.Go(func() {
					for i := len(inputs) - 1 - g; i >= 0; i -= 4 {
						results[i] = set.Decide(inputs[i])
					}
				})
			}
			wg.Wait()
			for i := range inputs {
				check(i, results[i])
			}
		})
	}
	set.scans.mu.Lock()
	n := len(set.scans.sessions)
	set.scans.mu.Unlock()
	if n == 0 {
		t.Error("Decide: no session remembered")
	}
}

// TestScanMemoryUsed checks that a remembered entry is not evaluated
// again, that result tags are read afresh, and that a session re-created
// with the same ID, or entries without Seq, start from nothing.
func TestScanMemoryUsed(t *testing.T) {
	set := mustCompile(t, `rules:
  - id: cred
    action: deny
    message: m
    when: history.exists(h, "credential" in h.labels)
  - id: tags
    action: revoke
    message: m
    when: history.exists(h, "secret" in h.result_tags)
`)
	sess := Session{ID: "s", Started: t0.Add(-time.Hour)}
	hist := []HistoryEntry{
		{Name: "demo__a", Labels: []string{"credential"}, Seq: 1},
		{Name: "demo__b", Seq: 2},
	}
	decide := func(s Session, h []HistoryEntry) Action {
		return set.Decide(&Input{Call: call("demo__c", `{}`), Session: s, History: h, Now: t0}).Action
	}
	if got := decide(sess, hist); got != ActionDeny {
		t.Fatalf("Decide(credential in history) = %s; want deny", got)
	}
	// Entry 1 changed although its Seq did not: the remembered result
	// stands, which shows it was not evaluated again.
	changed := slices.Clone(hist)
	changed[0].Labels = nil
	if got := decide(sess, changed); got != ActionDeny {
		t.Errorf("Decide(entry 1 changed, same Seq) = %s; want deny (remembered)", got)
	}
	// Dropping entry 1 drops its result.
	if got := decide(sess, changed[1:]); got != ActionAllow {
		t.Errorf("Decide(entry 1 dropped) = %s; want allow", got)
	}
	// Result tags are read at every decision.
	tagged := slices.Clone(changed)
	tagged[1].ResultTags = []string{"secret"}
	if got := decide(sess, tagged[1:]); got != ActionRevoke {
		t.Errorf("Decide(result tag added) = %s; want revoke", got)
	}
	// A session re-created with the same ID restarts its Seqs.
	again := Session{ID: "s", Started: t0}
	if got := decide(again, changed); got != ActionAllow {
		t.Errorf("Decide(re-created session) = %s; want allow", got)
	}
	// Entries without Seq are evaluated every time.
	noSeq := slices.Clone(hist)
	noSeq[0].Seq, noSeq[1].Seq = 0, 0
	if got := decide(sess, noSeq); got != ActionDeny {
		t.Errorf("Decide(no Seq) = %s; want deny", got)
	}
	noSeq[0].Labels = nil
	if got := decide(sess, noSeq); got != ActionAllow {
		t.Errorf("Decide(no Seq, entry changed) = %s; want allow", got)
	}
}

// TestScanMemoryBounded checks that the memory keeps at most scanSessions
// sessions.
func TestScanMemoryBounded(t *testing.T) {
	set := mustCompile(t, "rules:\n  - id: r\n    action: deny\n    message: m\n    when: history.exists(h, h.name == \"demo__x\")\n")
	hist := []HistoryEntry{{Name: "demo__a", Seq: 1}}
	for i := range scanSessions + 10 {
		set.Decide(&Input{Call: call("demo__c", `{}`), Session: Session{ID: fmt.Sprint("s", i)}, History: hist, Now: t0})
	}
	if n := len(set.scans.sessions); n != scanSessions {
		t.Errorf("after %d sessions: %d remembered; want %d", scanSessions+10, n, scanSessions)
	}
}

// TestScanWindow checks the per-entry results kept for a window of Seqs.
func TestScanWindow(t *testing.T) {
	var s scanSeqs
	w := s.window(1, 3)
	w[0], w[1], w[2] = resTrue, resFalse, resTrue
	if got := s.window(2, 4); !slices.Equal(got, []uint8{resFalse, resTrue, resUnknown}) {
		t.Errorf("window(2, 4) = %v; want [false true unknown]", got)
	}
	if got := s.window(1, 2); !slices.Equal(got, []uint8{resUnknown, resUnknown}) {
		t.Errorf("window(1, 2) after dropping 1 = %v; want nothing remembered", got)
	}
	s.window(10, 12)[0] = resError
	if got := s.window(10, 10); !slices.Equal(got, []uint8{resError}) {
		t.Errorf("window(10, 10) = %v; want [error]", got)
	}
}
