package sessionstest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toolgate/toolgate/sessions"
)

// NewStore returns an empty store that tells time by clock. Stores made for one test must
// not see each other's sessions, locks or events.
type NewStore func(t *testing.T, clock sessions.Clock) sessions.Store

// Start is where the suite's clocks begin.
var Start = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// Config tunes RunConfig.
type Config struct {
	// RaceTrials is how many trials the revoke race runs. Zero: RaceTrials().
	RaceTrials int
}

// Run runs the contract every Store must pass. Env TOOLGATE_RACE_TRIALS sets how many trials
// the revoke race runs (default 200).
func Run(t *testing.T, newStore NewStore) { RunConfig(t, Config{}, newStore) }

// RunConfig is Run with a Config.
func RunConfig(t *testing.T, cfg Config, newStore NewStore) {
	if cfg.RaceTrials <= 0 {
		cfg.RaceTrials = RaceTrials()
	}
	tests := []struct {
		name string
		f    func(t *testing.T, newStore NewStore)
	}{
		{"CreateAndLookup", testCreateAndLookup},
		{"InvalidInput", testInvalidInput},
		{"CommitHistory", testCommitHistory},
		{"HistoryBounded", testHistoryBounded},
		{"Conflict", testConflict},
		{"Budget", testBudget},
		{"Effects", testEffects},
		{"Narrow", testNarrow},
		{"Transitions", testTransitions},
		{"CommitNotActive", testCommitNotActive},
		{"ExpiryByClock", testExpiryByClock},
		{"IdleTimeout", testIdleTimeout},
		{"RevokedTokenStaysRejected", testRevokedTokenStaysRejected},
		{"ChosenToken", testChosenToken},
		{"Annotate", testAnnotate},
		{"RevokeWaitsForAck", testRevokeWaitsForAck},
		{"Events", testEvents},
		{"List", testList},
		{"RevokeAgent", testRevokeAgent},
		{"AgentLock", testAgentLock},
		{"Reaper", testReaper},
		{"RevokeRace", func(t *testing.T, newStore NewStore) { testRevokeRace(t, newStore, cfg.RaceTrials) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.f(t, newStore) })
	}
}

func spec(agent string) sessions.Spec {
	return sessions.Spec{
		Agent:    agent,
		Profile:  "default",
		Labels:   []string{"ci"},
		Scope:    []string{"files__read_*", "search__query"},
		Lifetime: time.Hour,
	}
}

func setup(t *testing.T, newStore NewStore) (sessions.Store, *Clock) {
	t.Helper()
	clock := NewClock(Start)
	return newStore(t, clock), clock
}

func create(t *testing.T, st sessions.Store, sp sessions.Spec) (*sessions.Session, string) {
	t.Helper()
	s, token, err := st.Create(context.Background(), sp)
	if err != nil {
		t.Fatalf("Create(%+v) error: %v", sp, err)
	}
	return s, token
}

func call(name string) sessions.CallRecord {
	return sessions.CallRecord{Server: "files", Tool: name, Name: "files__" + name, Args: json.RawMessage(`{"path":"/tmp/a"}`), Decision: "allow"}
}

// commit snapshots and commits once, failing the test on any error.
func commit(t *testing.T, st sessions.Store, id string, rec sessions.CallRecord, eff sessions.Effects) *sessions.Session {
	t.Helper()
	ctx := context.Background()
	snap, err := st.Snapshot(ctx, id)
	if err != nil {
		t.Fatalf("Snapshot(%s) error: %v", id, err)
	}
	s, err := st.Commit(ctx, id, snap.Version, rec, eff)
	if err != nil {
		t.Fatalf("Commit(%s, %d, %s) error: %v", id, snap.Version, rec.Name, err)
	}
	return s
}

func wantState(t *testing.T, err error, state sessions.State) {
	t.Helper()
	var se *sessions.StateError
	if !errors.As(err, &se) || se.State != state || !errors.Is(err, sessions.ErrNotActive) {
		t.Fatalf("error = %v; want a StateError for state %s", err, state)
	}
}

func testCreateAndLookup(t *testing.T, newStore NewStore) {
	st, clock := setup(t, newStore)
	ctx := context.Background()
	sp := spec("agent-1")
	sp.IdleTimeout = 10 * time.Minute
	sp.Budget = 5
	s, token := create(t, st, sp)
	hash := sessions.HashToken(token)
	if s.ID != sessions.IDFromHash(hash) {
		t.Errorf("ID = %s; want IDFromHash(token) = %s", s.ID, sessions.IDFromHash(hash))
	}
	got, err := st.LookupToken(ctx, hash)
	if err != nil {
		t.Fatalf("LookupToken error: %v", err)
	}
	want := &sessions.Session{
		ID: s.ID, Agent: "agent-1", Profile: "default", Labels: []string{"ci"},
		Scope: sp.Scope, State: sessions.StateActive, Created: clock.Now(), Expires: clock.Now().Add(time.Hour),
		IdleTimeout: 10 * time.Minute, LastActivity: clock.Now(), Budget: 5,
		HistoryLimit: sessions.DefaultHistoryLimit, Version: 1,
	}
	for _, c := range []struct {
		name string
		s    *sessions.Session
	}{{"Create", s}, {"LookupToken", got}} {
		if d := diff(c.s, want); d != "" {
			t.Errorf("%s returned %s", c.name, d)
		}
	}
	_, other := sessions.NewToken()
	if _, err := st.LookupToken(ctx, other); !errors.Is(err, sessions.ErrNotFound) {
		t.Errorf("LookupToken(unknown) error = %v; want ErrNotFound", err)
	}
	// A hash that shares the id half but not the rest must not find the session.
	forged := hash
	forged[31] ^= 1
	if _, err := st.LookupToken(ctx, forged); !errors.Is(err, sessions.ErrNotFound) {
		t.Errorf("LookupToken(forged hash) error = %v; want ErrNotFound", err)
	}
	// Copies: editing a returned session changes nothing in the store.
	got.Scope[0] = "*"
	again, _ := st.Get(ctx, s.ID)
	if again.Scope[0] != "files__read_*" {
		t.Errorf("store changed through a returned session: scope = %v", again.Scope)
	}
}

// diff compares the fields a store keeps, with times compared by instant.
func diff(got, want *sessions.Session) string {
	g, w := *got, *want
	for _, p := range []*sessions.Session{&g, &w} {
		p.Created, p.Expires, p.LastActivity = p.Created.UTC(), p.Expires.UTC(), p.LastActivity.UTC()
		p.History = nil
	}
	gj, _ := json.Marshal(g)
	wj, _ := json.Marshal(w)
	if string(gj) != string(wj) {
		return fmt.Sprintf("%s;\nwant %s", gj, wj)
	}
	return ""
}

func testInvalidInput(t *testing.T, newStore NewStore) {
	st, _ := setup(t, newStore)
	ctx := context.Background()
	bad := []struct {
		name string
		edit func(*sessions.Spec)
	}{
		{"no agent", func(s *sessions.Spec) { s.Agent = "" }},
		{"no scope", func(s *sessions.Spec) { s.Scope = nil }},
		{"empty scope entry", func(s *sessions.Spec) { s.Scope = []string{""} }},
		{"no lifetime", func(s *sessions.Spec) { s.Lifetime = 0 }},
		{"negative idle", func(s *sessions.Spec) { s.IdleTimeout = -time.Second }},
		{"negative budget", func(s *sessions.Spec) { s.Budget = -1 }},
		{"huge history", func(s *sessions.Spec) { s.HistoryLimit = 1 << 20 }},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			sp := spec("agent-1")
			tt.edit(&sp)
			if _, _, err := st.Create(ctx, sp); !errors.Is(err, sessions.ErrInvalid) {
				t.Errorf("Create(%+v) error = %v; want ErrInvalid", sp, err)
			}
		})
	}
	s, _ := create(t, st, spec("agent-1"))
	calls := []struct {
		name string
		rec  sessions.CallRecord
	}{
		{"no name", sessions.CallRecord{Server: "files", Tool: "x"}},
		{"args not JSON", sessions.CallRecord{Name: "files__x", Args: json.RawMessage(`{"a":`)}},
	}
	for _, tt := range calls {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := st.Commit(ctx, s.ID, s.Version, tt.rec, sessions.Effects{}); !errors.Is(err, sessions.ErrInvalid) {
				t.Errorf("Commit(%+v) error = %v; want ErrInvalid", tt.rec, err)
			}
		})
	}
	for _, id := range []string{"", "nope", "../../etc", s.ID + "0", "ABCDEF0123456789ABCDEF0123456789"} {
		if _, err := st.Snapshot(ctx, id); !errors.Is(err, sessions.ErrInvalid) {
			t.Errorf("Snapshot(%q) error = %v; want ErrInvalid", id, err)
		}
	}
	if _, err := st.Snapshot(ctx, "0123456789abcdef0123456789abcdef"); !errors.Is(err, sessions.ErrNotFound) {
		t.Errorf("Snapshot(unknown id) error = %v; want ErrNotFound", err)
	}
}

func testCommitHistory(t *testing.T, newStore NewStore) {
	st, clock := setup(t, newStore)
	ctx := context.Background()
	s, _ := create(t, st, spec("agent-1"))
	recs := []sessions.CallRecord{
		{Server: "files", Tool: "read_file", Name: "files__read_file", Args: json.RawMessage(`{ "path" : "/etc/hosts" }`),
			Labels: []string{"private_data"}, Decision: "allow", Rules: []string{"r1", "r2"}, ResultTags: []string{"secret"}},
		{Server: "web", Tool: "send", Name: "web-alias__send", Decision: "deny", Rules: []string{"no-exfil"}},
		{Server: "search", Tool: "query", Name: "search__query", Args: json.RawMessage(`{"q":"a \"quoted\" / ünïcode"}`), Decision: "allow",
			Time: Start.Add(90 * time.Second).Add(123 * time.Microsecond)},
	}
	effs := []sessions.Effects{{}, {Denied: true}, {}}
	var times []time.Time
	for i, rec := range recs {
		clock.Advance(time.Second)
		times = append(times, clock.Now())
		got := commit(t, st, s.ID, rec, effs[i])
		if got.Version != s.Version+int64(i)+1 {
			t.Errorf("Commit #%d version = %d; want %d", i, got.Version, s.Version+int64(i)+1)
		}
		if got.LastActivity.UnixMilli() != clock.Now().UnixMilli() {
			t.Errorf("Commit #%d LastActivity = %v; want %v", i, got.LastActivity, clock.Now())
		}
	}
	times[2] = Start.Add(90 * time.Second) // an explicit time is kept, to the millisecond
	snap, err := st.Snapshot(ctx, s.ID)
	if err != nil {
		t.Fatalf("Snapshot error: %v", err)
	}
	if snap.Calls != 2 || snap.Denied != 1 {
		t.Errorf("Calls, Denied = %d, %d; want 2, 1", snap.Calls, snap.Denied)
	}
	if len(snap.History) != len(recs) {
		t.Fatalf("len(History) = %d; want %d", len(snap.History), len(recs))
	}
	wantArgs := []string{`{"path":"/etc/hosts"}`, ``, `{"q":"a \"quoted\" / ünïcode"}`}
	for i, got := range snap.History {
		want := recs[i]
		want.Seq = int64(i + 1)
		want.Args = json.RawMessage(wantArgs[i])
		if len(want.Args) == 0 {
			want.Args = nil
		}
		want.Time = times[i]
		gj, _ := json.Marshal(withUTC(got))
		wj, _ := json.Marshal(withUTC(want))
		if string(gj) != string(wj) {
			t.Errorf("History[%d] = %s; want %s", i, gj, wj)
		}
	}
}

func withUTC(r sessions.CallRecord) sessions.CallRecord {
	r.Time = r.Time.UTC()
	return r
}

func testHistoryBounded(t *testing.T, newStore NewStore) {
	st, _ := setup(t, newStore)
	sp := spec("agent-1")
	sp.HistoryLimit = 3
	s, _ := create(t, st, sp)
	for i := range 7 {
		commit(t, st, s.ID, call(fmt.Sprintf("read_%d", i)), sessions.Effects{})
	}
	snap, err := st.Snapshot(context.Background(), s.ID)
	if err != nil {
		t.Fatalf("Snapshot error: %v", err)
	}
	var got []string
	for _, r := range snap.History {
		got = append(got, fmt.Sprintf("%d:%s", r.Seq, r.Tool))
	}
	if want := []string{"5:read_4", "6:read_5", "7:read_6"}; !slices.Equal(got, want) {
		t.Errorf("History = %v; want %v", got, want)
	}
	if snap.Calls != 7 {
		t.Errorf("Calls = %d; want 7", snap.Calls)
	}
}

func testConflict(t *testing.T, newStore NewStore) {
	st, _ := setup(t, newStore)
	ctx := context.Background()
	s, _ := create(t, st, spec("agent-1"))
	snap, _ := st.Snapshot(ctx, s.ID)
	if _, err := st.Commit(ctx, s.ID, snap.Version, call("read_a"), sessions.Effects{}); err != nil {
		t.Fatalf("first Commit error: %v", err)
	}
	if _, err := st.Commit(ctx, s.ID, snap.Version, call("read_b"), sessions.Effects{}); !errors.Is(err, sessions.ErrConflict) {
		t.Fatalf("Commit on a stale version error = %v; want ErrConflict", err)
	}
	// Any state change makes a snapshot stale, not only commits.
	snap, _ = st.Snapshot(ctx, s.ID)
	if _, err := st.Narrow(ctx, s.ID, []string{"files__read_secret"}); err != nil {
		t.Fatalf("Narrow error: %v", err)
	}
	if _, err := st.Commit(ctx, s.ID, snap.Version, call("read_b"), sessions.Effects{}); !errors.Is(err, sessions.ErrConflict) {
		t.Fatalf("Commit after Narrow error = %v; want ErrConflict", err)
	}
	got, _ := st.Snapshot(ctx, s.ID)
	if len(got.History) != 1 || got.Calls != 1 {
		t.Errorf("after conflicts: %d history entries, %d calls; want 1, 1", len(got.History), got.Calls)
	}
}

func testBudget(t *testing.T, newStore NewStore) {
	st, _ := setup(t, newStore)
	sp := spec("agent-1")
	sp.Budget = 2
	s, _ := create(t, st, sp)
	ctx := context.Background()
	steps := []struct {
		eff  sessions.Effects
		want error
	}{
		{sessions.Effects{}, nil},
		{sessions.Effects{Denied: true}, nil},
		{sessions.Effects{}, nil},
		{sessions.Effects{}, sessions.ErrBudget},
		{sessions.Effects{Denied: true}, nil}, // a denial is still recorded
	}
	for i, step := range steps {
		snap, err := st.Snapshot(ctx, s.ID)
		if err != nil {
			t.Fatalf("Snapshot error: %v", err)
		}
		_, err = st.Commit(ctx, s.ID, snap.Version, call("read_x"), step.eff)
		if !errors.Is(err, step.want) || (step.want == nil && err != nil) {
			t.Errorf("step %d: Commit(Denied=%v) error = %v; want %v", i, step.eff.Denied, err, step.want)
		}
	}
	got, _ := st.Get(ctx, s.ID)
	if got.Calls != 2 || got.Denied != 2 || len(got.History) != 4 {
		t.Errorf("Calls, Denied, history = %d, %d, %d; want 2, 2, 4", got.Calls, got.Denied, len(got.History))
	}
}

func testEffects(t *testing.T, newStore NewStore) {
	st, clock := setup(t, newStore)
	ctx := context.Background()
	s, _ := create(t, st, spec("agent-1"))
	risk := 0.75
	window := clock.Now().Add(20 * time.Minute)
	got := commit(t, st, s.ID, call("read_a"), sessions.Effects{
		Risk: &risk, Remove: []string{"files__read_secret*"}, AddLabels: []string{"tainted", "ci"}, ExpireAt: window,
	})
	if got.Risk != 0.75 {
		t.Errorf("Risk = %v; want 0.75", got.Risk)
	}
	if !slices.Equal(got.Labels, []string{"ci", "tainted"}) {
		t.Errorf("Labels = %v; want [ci tainted]", got.Labels)
	}
	if !slices.Equal(got.Removed, []string{"files__read_secret*"}) {
		t.Errorf("Removed = %v; want [files__read_secret*]", got.Removed)
	}
	if !got.Expires.Equal(window) {
		t.Errorf("Expires = %v; want %v (ExpireAt shortens)", got.Expires, window)
	}
	got = commit(t, st, s.ID, call("read_b"), sessions.Effects{ExpireAt: window.Add(time.Hour)})
	if !got.Expires.Equal(window) {
		t.Errorf("Expires = %v; want %v (ExpireAt never lengthens)", got.Expires, window)
	}
	if got.Risk != 0.75 {
		t.Errorf("Risk = %v; want 0.75 kept when Effects.Risk is nil", got.Risk)
	}
	got = commit(t, st, s.ID, call("read_c"), sessions.Effects{Freeze: true, Reason: "approval needed"})
	if got.State != sessions.StateFrozen || got.Reason != "approval needed" {
		t.Errorf("after Freeze effect: state %s (%q); want frozen (approval needed)", got.State, got.Reason)
	}
	if _, err := st.Resume(ctx, s.ID); err != nil {
		t.Fatalf("Resume error: %v", err)
	}
	got = commit(t, st, s.ID, call("read_d"), sessions.Effects{Denied: true, Revoke: true, Freeze: true, Reason: "exfiltration"})
	if got.State != sessions.StateRevoked || got.Reason != "exfiltration" {
		t.Errorf("after Revoke effect: state %s (%q); want revoked (exfiltration)", got.State, got.Reason)
	}
	snap, err := st.Get(ctx, s.ID)
	if err != nil {
		t.Fatalf("Get error: %v", err)
	}
	if n := len(snap.History); n != 4 || snap.History[3].Tool != "read_d" {
		t.Errorf("history has %d entries; want 4 ending with the revoking call", n)
	}
	// A session opened without labels gets its first ones.
	sp := spec("agent-2")
	sp.Labels = nil
	bare, _ := create(t, st, sp)
	got = commit(t, st, bare.ID, call("read_a"), sessions.Effects{AddLabels: []string{"tainted"}})
	if !slices.Equal(got.Labels, []string{"tainted"}) {
		t.Errorf("Labels of a session opened without = %v; want [tainted]", got.Labels)
	}
}

func testNarrow(t *testing.T, newStore NewStore) {
	st, _ := setup(t, newStore)
	ctx := context.Background()
	s, _ := create(t, st, spec("agent-1"))
	n, err := st.Narrow(ctx, s.ID, []string{"files__read_secret*", "search__query"})
	if err != nil {
		t.Fatalf("Narrow error: %v", err)
	}
	if n.Version != s.Version+1 {
		t.Errorf("Narrow version = %d; want %d", n.Version, s.Version+1)
	}
	again, err := st.Narrow(ctx, s.ID, []string{"search__query"})
	if err != nil || again.Version != n.Version {
		t.Errorf("Narrow(already removed) = version %d, %v; want version %d unchanged, nil", again.Version, err, n.Version)
	}
	got, _ := st.Snapshot(ctx, s.ID)
	for _, tt := range []struct {
		name string
		want bool
	}{
		{"files__read_file", true},
		{"files__read_", true},
		{"files__read_secret_key", false},
		{"files__read_secret", false},
		{"search__query", false},
		{"files__write_file", false},
		{"search__query2", false},
	} {
		if g := got.Allowed(tt.name); g != tt.want {
			t.Errorf("Allowed(%q) = %v; want %v", tt.name, g, tt.want)
		}
	}
	if _, err := st.Narrow(ctx, s.ID, []string{""}); !errors.Is(err, sessions.ErrInvalid) {
		t.Errorf("Narrow(empty name) error = %v; want ErrInvalid", err)
	}
	if _, err := st.Revoke(ctx, s.ID, "done"); err != nil {
		t.Fatal(err)
	}
	_, err = st.Narrow(ctx, s.ID, []string{"files__read_file"})
	wantState(t, err, sessions.StateRevoked)
}

func testTransitions(t *testing.T, newStore NewStore) {
	st, _ := setup(t, newStore)
	ctx := context.Background()
	ops := map[string]func(id string) (*sessions.Session, error){
		"freeze": func(id string) (*sessions.Session, error) { return st.Freeze(ctx, id, "looks odd") },
		"resume": func(id string) (*sessions.Session, error) { return st.Resume(ctx, id) },
		"revoke": func(id string) (*sessions.Session, error) { return st.Revoke(ctx, id, "compromised") },
		"touch":  func(id string) (*sessions.Session, error) { return st.Touch(ctx, id) },
	}
	tests := []struct {
		before    []string
		op        string
		wantState sessions.State
		wantErr   sessions.State // the state a StateError names, or ""
		bump      bool
	}{
		{nil, "freeze", sessions.StateFrozen, "", true},
		{[]string{"freeze"}, "freeze", sessions.StateFrozen, "", false},
		{[]string{"freeze"}, "resume", sessions.StateActive, "", true},
		{nil, "resume", "", sessions.StateActive, false},
		{nil, "revoke", sessions.StateRevoked, "", true},
		{[]string{"freeze"}, "revoke", sessions.StateRevoked, "", true},
		{[]string{"revoke"}, "revoke", sessions.StateRevoked, "", false},
		{[]string{"revoke"}, "resume", "", sessions.StateRevoked, false},
		{[]string{"revoke"}, "freeze", "", sessions.StateRevoked, false},
		{nil, "touch", sessions.StateActive, "", false},
		{[]string{"freeze"}, "touch", "", sessions.StateFrozen, false},
	}
	for _, tt := range tests {
		name := fmt.Sprintf("%v+%s", tt.before, tt.op)
		t.Run(name, func(t *testing.T) {
			s, _ := create(t, st, spec("agent-1"))
			for _, op := range tt.before {
				if _, err := ops[op](s.ID); err != nil {
					t.Fatalf("%s error: %v", op, err)
				}
			}
			before, _ := st.Get(ctx, s.ID)
			got, err := ops[tt.op](s.ID)
			if tt.wantErr != "" {
				wantState(t, err, tt.wantErr)
				return
			}
			if err != nil {
				t.Fatalf("%s error: %v", tt.op, err)
			}
			if got.State != tt.wantState {
				t.Errorf("%s: state = %s; want %s", name, got.State, tt.wantState)
			}
			if bumped := got.Version > before.Version; bumped != tt.bump {
				t.Errorf("%s: version %d -> %d; want a new version: %v", name, before.Version, got.Version, tt.bump)
			}
		})
	}
}

func testCommitNotActive(t *testing.T, newStore NewStore) {
	st, _ := setup(t, newStore)
	ctx := context.Background()
	for _, tt := range []struct {
		op   func(id string) error
		want sessions.State
	}{
		{func(id string) error { _, err := st.Freeze(ctx, id, "x"); return err }, sessions.StateFrozen},
		{func(id string) error { _, err := st.Revoke(ctx, id, "x"); return err }, sessions.StateRevoked},
	} {
		t.Run(string(tt.want), func(t *testing.T) {
			s, token := create(t, st, spec("agent-1"))
			if err := tt.op(s.ID); err != nil {
				t.Fatal(err)
			}
			cur, err := st.Snapshot(ctx, s.ID)
			wantState(t, err, tt.want)
			if cur == nil || cur.State != tt.want {
				t.Fatalf("Snapshot of a %s session returned %+v; want the session", tt.want, cur)
			}
			_, err = st.LookupToken(ctx, sessions.HashToken(token))
			wantState(t, err, tt.want)
			_, err = st.Commit(ctx, s.ID, cur.Version, call("read_a"), sessions.Effects{})
			wantState(t, err, tt.want)
		})
	}
}

func testExpiryByClock(t *testing.T, newStore NewStore) {
	st, clock := setup(t, newStore)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, err := st.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s, token := create(t, st, spec("agent-1"))
	next, err := st.Reap(ctx)
	if err != nil || !next.Equal(s.Expires) {
		t.Errorf("Reap() = %v, %v; want next expiry %v", next, err, s.Expires)
	}
	clock.Advance(time.Hour - time.Millisecond)
	if _, err := st.LookupToken(ctx, sessions.HashToken(token)); err != nil {
		t.Fatalf("LookupToken 1ms before expiry error: %v", err)
	}
	clock.Advance(time.Millisecond)
	_, err = st.LookupToken(ctx, sessions.HashToken(token))
	wantState(t, err, sessions.StateExpired)
	expectEvent(t, events, sessions.Event{SessionID: s.ID, Agent: "agent-1", Kind: sessions.EventExpired, Reason: "lifetime ended"})
	// The transition happened once: no second event from later reads or a reap.
	_, _ = st.Snapshot(ctx, s.ID)
	if _, err := st.Reap(ctx); err != nil {
		t.Fatal(err)
	}
	s2, _ := create(t, st, spec("agent-1"))
	if _, err := st.Revoke(ctx, s2.ID, "marker"); err != nil {
		t.Fatal(err)
	}
	expectEvent(t, events, sessions.Event{SessionID: s2.ID, Agent: "agent-1", Kind: sessions.EventRevoked, Reason: "marker"})

	// A reap alone (no read) ends a session whose time has come.
	s3, _ := create(t, st, spec("agent-2"))
	clock.Advance(time.Hour)
	if _, err := st.Reap(ctx); err != nil {
		t.Fatalf("Reap error: %v", err)
	}
	expectEvent(t, events, sessions.Event{SessionID: s3.ID, Agent: "agent-2", Kind: sessions.EventExpired, Reason: "lifetime ended"})
	got, err := st.Get(ctx, s3.ID)
	if err != nil || got.State != sessions.StateExpired {
		t.Errorf("Get after reap = %+v, %v; want state expired", got, err)
	}
}

func testIdleTimeout(t *testing.T, newStore NewStore) {
	st, clock := setup(t, newStore)
	ctx := context.Background()
	sp := spec("agent-1")
	sp.IdleTimeout = 5 * time.Minute
	sp.Lifetime = 2 * time.Hour
	s, _ := create(t, st, sp)
	clock.Advance(5*time.Minute - time.Millisecond)
	commit(t, st, s.ID, call("read_a"), sessions.Effects{})
	clock.Advance(5*time.Minute - time.Millisecond)
	if _, err := st.Touch(ctx, s.ID); err != nil {
		t.Fatalf("Touch error: %v", err)
	}
	clock.Advance(5*time.Minute - time.Millisecond)
	if _, err := st.Snapshot(ctx, s.ID); err != nil {
		t.Fatalf("Snapshot before idle timeout error: %v", err)
	}
	// Frozen time is not idle time.
	if _, err := st.Freeze(ctx, s.ID, "review"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour - 16*time.Minute)
	if _, err := st.Resume(ctx, s.ID); err != nil {
		t.Fatalf("Resume after a long freeze error: %v", err)
	}
	clock.Advance(5 * time.Minute)
	got, err := st.Snapshot(ctx, s.ID)
	wantState(t, err, sessions.StateExpired)
	if got.Reason != "idle timeout" {
		t.Errorf("Reason = %q; want %q", got.Reason, "idle timeout")
	}
}

func testRevokedTokenStaysRejected(t *testing.T, newStore NewStore) {
	st, clock := setup(t, newStore)
	ctx := context.Background()
	s, token := create(t, st, spec("agent-1"))
	hash := sessions.HashToken(token)
	clock.Advance(10 * time.Minute)
	if _, err := st.Revoke(ctx, s.ID, "leaked"); err != nil {
		t.Fatal(err)
	}
	for _, at := range []time.Duration{0, 30 * time.Minute, 50*time.Minute - time.Millisecond} {
		clock.Set(Start.Add(10 * time.Minute).Add(at))
		got, err := st.LookupToken(ctx, hash)
		wantState(t, err, sessions.StateRevoked)
		if got.Reason != "leaked" {
			t.Errorf("Reason = %q; want leaked", got.Reason)
		}
		if _, err := st.Reap(ctx); err != nil {
			t.Fatal(err)
		}
	}
	clock.Set(Start.Add(2 * time.Hour))
	if _, err := st.Reap(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := st.LookupToken(ctx, hash); err == nil {
		t.Errorf("LookupToken after expiry succeeded; want an error")
	}
}

// testRevokeWaitsForAck: a revoke returns only after the subscribed replica confirmed it had
// stopped the session's calls; a replica that never confirms holds it up only for a bound.
func testRevokeWaitsForAck(t *testing.T, newStore NewStore) {
	st, _ := setup(t, newStore)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, err := st.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var stopped atomic.Bool
	go func() {
		for ev := range events {
			if ev.Kind == sessions.EventRevoked && ev.Reason == "acked" {
				time.Sleep(20 * time.Millisecond) // the replica stopping its calls
				stopped.Store(true)
				if err := st.Ack(ctx, ev); err != nil {
					t.Errorf("Ack: %v", err)
				}
			}
		}
	}()
	s, _ := create(t, st, spec("agent-1"))
	if _, err := st.Revoke(context.Background(), s.ID, "acked"); err != nil {
		t.Fatal(err)
	}
	if !stopped.Load() {
		t.Fatal("Revoke returned before the subscribed replica acknowledged it")
	}
	// The subscriber above ignores this one: the revoke still returns.
	other, _ := create(t, st, spec("agent-1"))
	done := make(chan error, 1)
	go func() { _, err := st.Revoke(context.Background(), other.ID, "ignored"); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Revoke waited more than 10s for an acknowledgement that never came")
	}
}

// testAnnotate: detector state travels with commits and annotations; result tags reach the
// call they belong to; an annotation changes the version.
func testAnnotate(t *testing.T, newStore NewStore) {
	st, _ := setup(t, newStore)
	ctx := context.Background()
	s, _ := create(t, st, spec("agent-1"))
	commit(t, st, s.ID, call("read_a"), sessions.Effects{Detect: []byte{1, 0, 2}})
	commit(t, st, s.ID, call("read_b"), sessions.Effects{})
	snap, err := st.Snapshot(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(snap.Detect, []byte{1, 0, 2}) {
		t.Fatalf("Detect after commits = %v; want [1 0 2] (a commit without Detect keeps it)", snap.Detect)
	}
	if err := st.Annotate(ctx, s.ID, snap.Version+1, 1, []string{"untrusted_content"}, []byte{7}); !errors.Is(err, sessions.ErrConflict) {
		t.Fatalf("Annotate on a version the session is not at = %v; want ErrConflict", err)
	}
	if err := st.Annotate(ctx, s.ID, snap.Version, 1, []string{"untrusted_content", "private_data"}, []byte{9}); err != nil {
		t.Fatalf("Annotate: %v", err)
	}
	if err := st.Annotate(ctx, s.ID, 0, 1, []string{"untrusted_content"}, nil); err != nil {
		t.Fatalf("Annotate again: %v", err)
	}
	after, err := st.Snapshot(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(after.Detect, []byte{9}) {
		t.Errorf("Detect after Annotate = %v; want [9]", after.Detect)
	}
	if got := after.History[0].ResultTags; !slices.Equal(got, []string{"untrusted_content", "private_data"}) {
		t.Errorf("ResultTags of call 1 = %v; want [untrusted_content private_data]", got)
	}
	if got := after.History[1].ResultTags; len(got) != 0 {
		t.Errorf("ResultTags of call 2 = %v; want none", got)
	}
	if after.Version == snap.Version {
		t.Errorf("Annotate kept version %d; want a new one", after.Version)
	}
	if _, err := st.Commit(ctx, s.ID, snap.Version, call("read_c"), sessions.Effects{}); !errors.Is(err, sessions.ErrConflict) {
		t.Errorf("Commit on the version before Annotate = %v; want ErrConflict", err)
	}
	if err := st.Annotate(ctx, "00000000000000000000000000000000", 0, 1, nil, nil); !errors.Is(err, sessions.ErrNotFound) {
		t.Errorf("Annotate of an unknown session = %v; want ErrNotFound", err)
	}
}

// testChosenToken: a session made with Spec.Token is found by that token; the token cannot
// open a second session while the first is live or revoked, and can once it has expired.
func testChosenToken(t *testing.T, newStore NewStore) {
	st, clock := setup(t, newStore)
	ctx := context.Background()
	sp := spec("agent-1")
	sp.Token = "implicit-0123456789abcdef0123456789abcdef"
	s, token := create(t, st, sp)
	if token != sp.Token {
		t.Fatalf("Create returned token %q; want the chosen %q", token, sp.Token)
	}
	got, err := st.LookupToken(ctx, sessions.HashToken(sp.Token))
	if err != nil || got.ID != s.ID {
		t.Fatalf("LookupToken(chosen) = %v, %v; want session %s", got, err, s.ID)
	}
	if _, _, err := st.Create(ctx, sp); !errors.Is(err, sessions.ErrTokenTaken) {
		t.Fatalf("Create with a live session's token = %v; want ErrTokenTaken", err)
	}
	if _, err := st.Revoke(ctx, s.ID, "stolen"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Create(ctx, sp); !errors.Is(err, sessions.ErrTokenTaken) {
		t.Fatalf("Create with a revoked session's token = %v; want ErrTokenTaken until its expiry", err)
	}
	clock.Advance(time.Hour)
	again, _ := create(t, st, sp)
	if again.State != sessions.StateActive || again.Calls != 0 || !again.Created.After(s.Created) {
		t.Fatalf("session after expiry = %+v; want a new active session", again)
	}
	sp.Token = "short"
	if _, _, err := st.Create(ctx, sp); !errors.Is(err, sessions.ErrInvalid) {
		t.Fatalf("Create with a short chosen token = %v; want ErrInvalid", err)
	}
}

func expectEvent(t *testing.T, ch <-chan sessions.Event, want sessions.Event) {
	t.Helper()
	select {
	case got, ok := <-ch:
		if !ok {
			t.Fatalf("event channel closed; want %+v", want)
		}
		if got.Version <= 0 {
			t.Fatalf("event %+v carries no session version", got)
		}
		if want.Version == 0 {
			got.Version = 0 // the caller did not say which version
		}
		if got != want {
			t.Fatalf("event = %+v; want %+v", got, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no event within 5s; want %+v", want)
	}
}

func testEvents(t *testing.T, newStore NewStore) {
	st, _ := setup(t, newStore)
	ctx, cancel := context.WithCancel(context.Background())
	events, err := st.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := create(t, st, spec("agent-1"))
	ev := func(k sessions.EventKind, reason string) sessions.Event {
		return sessions.Event{SessionID: s.ID, Agent: "agent-1", Kind: k, Reason: reason}
	}
	steps := []struct {
		do   func() error
		want sessions.Event
	}{
		{func() error { _, err := st.Narrow(ctx, s.ID, []string{"search__query"}); return err }, ev(sessions.EventNarrowed, "")},
		{func() error { _, err := st.Freeze(ctx, s.ID, "odd"); return err }, ev(sessions.EventFrozen, "odd")},
		{func() error { _, err := st.Resume(ctx, s.ID); return err }, ev(sessions.EventResumed, "")},
		{func() error {
			snap, _ := st.Snapshot(ctx, s.ID)
			_, err := st.Commit(ctx, s.ID, snap.Version, call("read_a"), sessions.Effects{Remove: []string{"files__read_b"}})
			return err
		}, ev(sessions.EventNarrowed, "")},
		{func() error { _, err := st.Revoke(ctx, s.ID, "bye"); return err }, ev(sessions.EventRevoked, "bye")},
	}
	for i, step := range steps {
		if err := step.do(); err != nil {
			t.Fatalf("step %d error: %v", i, err)
		}
		expectEvent(t, events, step.want)
	}
	cancel()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-events:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("event channel not closed 5s after its context ended")
		}
	}
}

func testList(t *testing.T, newStore NewStore) {
	st, _ := setup(t, newStore)
	ctx := context.Background()
	byState := map[sessions.State][]string{}
	byAgent := map[string][]string{}
	var all []string
	for i := range 9 {
		agent := fmt.Sprintf("agent-%d", i%2)
		s, _ := create(t, st, spec(agent))
		state := sessions.StateActive
		switch i % 3 {
		case 1:
			state = sessions.StateFrozen
			_, _ = st.Freeze(ctx, s.ID, "x")
		case 2:
			state = sessions.StateRevoked
			_, _ = st.Revoke(ctx, s.ID, "x")
		}
		byState[state] = append(byState[state], s.ID)
		byAgent[agent] = append(byAgent[agent], s.ID)
	}
	for _, stt := range sessions.States {
		slices.Sort(byState[stt])
		all = append(all, byState[stt]...)
	}
	for _, a := range byAgent {
		slices.Sort(a)
	}
	tests := []struct {
		opts sessions.ListOptions
		want []string
	}{
		{sessions.ListOptions{}, all},
		{sessions.ListOptions{Limit: 2}, all},
		{sessions.ListOptions{State: sessions.StateFrozen, Limit: 2}, byState[sessions.StateFrozen]},
		{sessions.ListOptions{Agent: "agent-1", Limit: 3}, byAgent["agent-1"]},
		{sessions.ListOptions{Agent: "agent-0", State: sessions.StateRevoked, Limit: 1}, intersect(byAgent["agent-0"], byState[sessions.StateRevoked])},
		{sessions.ListOptions{Agent: "nobody"}, nil},
	}
	for _, tt := range tests {
		var got []string
		opts := tt.opts
		for pages := 0; ; pages++ {
			if pages > 20 {
				t.Fatalf("List(%+v) did not end after 20 pages", tt.opts)
			}
			p, err := st.List(ctx, opts)
			if err != nil {
				t.Fatalf("List(%+v) error: %v", opts, err)
			}
			if opts.Limit > 0 && len(p.Sessions) > opts.Limit {
				t.Errorf("List(%+v) returned %d sessions; want at most %d", opts, len(p.Sessions), opts.Limit)
			}
			for _, s := range p.Sessions {
				got = append(got, s.ID)
				if s.History != nil {
					t.Errorf("List returned history")
				}
			}
			if p.Next == "" {
				break
			}
			opts.Cursor = p.Next
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("List(%+v) = %v; want %v", tt.opts, got, tt.want)
		}
	}
	if _, err := st.List(ctx, sessions.ListOptions{Cursor: "garbage"}); !errors.Is(err, sessions.ErrInvalid) {
		t.Errorf("List(bad cursor) error = %v; want ErrInvalid", err)
	}
	if _, err := st.List(ctx, sessions.ListOptions{State: "sleeping"}); !errors.Is(err, sessions.ErrInvalid) {
		t.Errorf("List(bad state) error = %v; want ErrInvalid", err)
	}
}

func intersect(a, b []string) []string {
	var out []string
	for _, x := range a {
		if slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

func testRevokeAgent(t *testing.T, newStore NewStore) {
	st, _ := setup(t, newStore)
	ctx := context.Background()
	a1, _ := create(t, st, spec("agent-a"))
	a2, _ := create(t, st, spec("agent-a"))
	a3, _ := create(t, st, spec("agent-a"))
	b1, _ := create(t, st, spec("agent-b"))
	_, _ = st.Freeze(ctx, a2.ID, "x")
	_, _ = st.Revoke(ctx, a3.ID, "earlier")
	n, err := st.RevokeAgent(ctx, "agent-a", "offboarded")
	if err != nil || n != 2 {
		t.Fatalf("RevokeAgent = %d, %v; want 2, nil", n, err)
	}
	for _, tt := range []struct {
		id     string
		state  sessions.State
		reason string
	}{
		{a1.ID, sessions.StateRevoked, "offboarded"},
		{a2.ID, sessions.StateRevoked, "offboarded"},
		{a3.ID, sessions.StateRevoked, "earlier"},
		{b1.ID, sessions.StateActive, ""},
	} {
		got, err := st.Get(ctx, tt.id)
		if err != nil || got.State != tt.state || got.Reason != tt.reason {
			t.Errorf("Get(%s) = %v (%q), %v; want %s (%q)", tt.id, got.State, got.Reason, err, tt.state, tt.reason)
		}
	}
}

func testAgentLock(t *testing.T, newStore NewStore) {
	st, _ := setup(t, newStore)
	ctx := context.Background()
	open, _ := create(t, st, spec("agent-a"))
	if err := st.LockAgent(ctx, "agent-a"); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		agent string
		want  error
	}{{"agent-a", sessions.ErrAgentLocked}, {"agent-b", nil}} {
		_, _, err := st.Create(ctx, spec(tt.agent))
		if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
			t.Errorf("Create(%s) while agent-a is locked: error = %v; want %v", tt.agent, err, tt.want)
		}
		locked, err := st.AgentLocked(ctx, tt.agent)
		if err != nil || locked != (tt.want != nil) {
			t.Errorf("AgentLocked(%s) = %v, %v; want %v", tt.agent, locked, err, tt.want != nil)
		}
	}
	if _, err := st.Snapshot(ctx, open.ID); err != nil {
		t.Errorf("an open session of a locked agent: Snapshot error = %v; want it to go on", err)
	}
	if err := st.UnlockAgent(ctx, "agent-a"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Create(ctx, spec("agent-a")); err != nil {
		t.Errorf("Create after UnlockAgent error: %v", err)
	}
}

func testReaper(t *testing.T, newStore NewStore) {
	st, clock := setup(t, newStore)
	ctx, cancel := context.WithCancel(context.Background())
	events, err := st.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sp := spec("agent-1")
	sp.Lifetime = 10 * time.Minute
	s, _ := create(t, st, sp)
	r := &sessions.Reaper{Store: st, Clock: clock, Interval: time.Hour}
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	// Wait until the reaper has armed its timer (for the session's expiry), then pass it.
	deadline := time.Now().Add(5 * time.Second)
	for clock.Timers() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("reaper armed no timer within 5s")
		}
		runtime.Gosched()
	}
	clock.Advance(10 * time.Minute)
	expectEvent(t, events, sessions.Event{SessionID: s.ID, Agent: "agent-1", Kind: sessions.EventExpired, Reason: "lifetime ended"})
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run after cancel = %v; want context.Canceled", err)
	}
}

// RaceTrials is how many trials testRevokeRace runs: env TOOLGATE_RACE_TRIALS, default 200.
func RaceTrials() int {
	if n, err := strconv.Atoi(os.Getenv("TOOLGATE_RACE_TRIALS")); err == nil && n > 0 {
		return n
	}
	return 200
}

// testRevokeRace: 64 goroutines run Snapshot→Commit on one session while another revokes it
// after a random number of commits. No commit may succeed once Revoke has returned, and no two
// commits may succeed on the same version.
func testRevokeRace(t *testing.T, newStore NewStore, trials int) {
	st, _ := setup(t, newStore)
	ctx := context.Background()
	const workers = 64
	if testing.Short() {
		trials = 20
	}
	for trial := range trials {
		sp := spec("racer")
		sp.HistoryLimit = 8
		s, _ := create(t, st, sp)
		revokeAfter := rand.Int64N(12)
		var (
			committed   atomic.Int64
			finished    atomic.Int32
			revoked     atomic.Bool
			mu          sync.Mutex
			versions    = map[int64]bool{}
			late, dups  int
			maxVersion  int64
			unexpected  []error
			wg          sync.WaitGroup
			revokeState *sessions.Session
		)
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer finished.Add(1)
				for {
					snap, err := st.Snapshot(ctx, s.ID)
					if errors.Is(err, sessions.ErrNotActive) {
						return
					}
					if err != nil {
						mu.Lock()
						unexpected = append(unexpected, err)
						mu.Unlock()
						return
					}
					startedAfterRevoke := revoked.Load()
					got, err := st.Commit(ctx, s.ID, snap.Version, call("read_x"), sessions.Effects{})
					switch {
					case err == nil:
						mu.Lock()
						if startedAfterRevoke {
							late++
						}
						if versions[snap.Version] {
							dups++
						}
						versions[snap.Version] = true
						maxVersion = max(maxVersion, got.Version)
						mu.Unlock()
						committed.Add(1)
					case errors.Is(err, sessions.ErrConflict):
					case errors.Is(err, sessions.ErrNotActive):
						return
					default:
						mu.Lock()
						unexpected = append(unexpected, err)
						mu.Unlock()
						return
					}
				}
			}()
		}
		for committed.Load() < revokeAfter && finished.Load() < workers {
			runtime.Gosched()
		}
		rs, err := st.Revoke(ctx, s.ID, "race")
		revoked.Store(true)
		if err != nil {
			t.Fatalf("trial %d: Revoke error: %v", trial, err)
		}
		revokeState = rs
		wg.Wait()
		if len(unexpected) > 0 {
			t.Fatalf("trial %d: unexpected errors: %v", trial, unexpected)
		}
		if late > 0 || dups > 0 {
			t.Fatalf("trial %d: %d commits succeeded after Revoke returned, %d on a version already used; want 0, 0", trial, late, dups)
		}
		if maxVersion >= revokeState.Version {
			t.Fatalf("trial %d: a commit produced version %d, at or after the revoke's %d", trial, maxVersion, revokeState.Version)
		}
		final, _ := st.Get(ctx, s.ID)
		if final.Calls != committed.Load() {
			t.Fatalf("trial %d: session counts %d calls; %d commits succeeded", trial, final.Calls, committed.Load())
		}
	}
}
