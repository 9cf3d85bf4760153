package sessions_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/toolgate/toolgate/sessions"
	"github.com/toolgate/toolgate/sessions/sessionstest"
)

// sameSession fails unless got and want marshal alike.
func sameSession(t *testing.T, what string, got, want *sessions.Session) {
	t.Helper()
	gj, _ := json.Marshal(got)
	wj, _ := json.Marshal(want)
	if string(gj) != string(wj) {
		t.Fatalf("%s =\n%s\nwant\n%s", what, gj, wj)
	}
}

// Recent, after this replica's own commits and annotations, is what a replica that caches
// nothing reads: history trimmed to the limit and sealed into blocks on the way, result tags,
// detector state, labels, removals, risk, denied calls.
func TestRedisRecentFollowsOwnChanges(t *testing.T) {
	srv := sessionstest.StartRedis(t)
	ctx := context.Background()
	for _, block := range []int{4, -1} {
		t.Run(fmt.Sprintf("block=%d", block), func(t *testing.T) {
			prefix := sessionstest.Prefix()
			st := sessions.NewRedis(srv.Client(), sessions.RedisOptions{Prefix: prefix, HistoryBlock: block})
			full := sessions.NewRedis(srv.Client(), sessions.RedisOptions{Prefix: prefix, HistoryBlock: block, HistoryCache: -1})
			spec := testSpec()
			spec.HistoryLimit = 10
			s, _, err := st.Create(ctx, spec)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := st.Recent(s.ID); ok {
				t.Fatal("Recent before any read = ok; want no view")
			}
			if _, err := st.Snapshot(ctx, s.ID); err != nil {
				t.Fatal(err)
			}
			for i := 1; i <= 30; i++ {
				view, ok := st.Recent(s.ID)
				if !ok {
					t.Fatalf("call %d: Recent = not ok; want the view", i)
				}
				want, err := full.Snapshot(ctx, s.ID)
				if err != nil {
					t.Fatal(err)
				}
				sameSession(t, fmt.Sprintf("call %d: Recent", i), view, want)
				if i%5 == 0 {
					// A Snapshot is the caller's: scribbling on it must not reach the view.
					snap, err := st.Snapshot(ctx, s.ID)
					if err != nil {
						t.Fatal(err)
					}
					snap.Labels = append(snap.Labels, "scribbled")
					for j := range snap.History {
						snap.History[j].Decision = "scribbled"
						if len(snap.History[j].ResultTags) > 0 {
							snap.History[j].ResultTags[0] = "scribbled"
						}
					}
					if view, _ = st.Recent(s.ID); view == nil || view.Version != snap.Version {
						t.Fatalf("call %d: Recent after Snapshot = %v; want the view at version %d", i, view, snap.Version)
					}
				}

				rec := readCall(i)
				if i%3 == 0 {
					rec.ResultTags = []string{"own"}
				}
				risk := float64(i) / 100
				eff := sessions.Effects{Denied: i%5 == 0, Risk: &risk, Detect: []byte(fmt.Sprintf("state-%d", i))}
				if i%7 == 0 {
					eff.AddLabels = []string{fmt.Sprintf("l%d", i)}
					eff.Remove = []string{fmt.Sprintf("files__x%d", i)}
				}
				after, err := st.Commit(ctx, s.ID, view.Version, rec, eff)
				if err != nil {
					t.Fatalf("call %d: Commit on the view: %v", i, err)
				}
				if string(after.Detect) != string(eff.Detect) {
					t.Errorf("call %d: Commit answered detector state %q; want %q", i, after.Detect, eff.Detect)
				}
				if i%2 == 0 {
					var tags []string
					if i%4 == 0 {
						tags = []string{"untrusted_content", fmt.Sprintf("t%d", i)}
					}
					if err := st.Annotate(ctx, s.ID, after.Version, after.Calls+after.Denied, tags, []byte(fmt.Sprintf("seen-%d", i))); err != nil {
						t.Fatalf("call %d: Annotate: %v", i, err)
					}
				}
			}
			view, ok := st.Recent(s.ID)
			want, err := full.Snapshot(ctx, s.ID)
			if !ok || err != nil {
				t.Fatalf("Recent = %v, Snapshot error %v", ok, err)
			}
			sameSession(t, "Recent after 30 calls", view, want)
		})
	}
}

// A view gone stale through another replica still comes back from Recent (nothing told this
// replica), but no call commits on it, and the next calls read the session instead.
func TestRedisRecentStaleView(t *testing.T) {
	srv := sessionstest.StartRedis(t)
	ctx := context.Background()
	prefix := sessionstest.Prefix()
	a := newRedis(srv.Client(), prefix, nil)
	b := newRedis(srv.Client(), prefix, nil)
	s, _, err := a.Create(ctx, testSpec())
	if err != nil {
		t.Fatal(err)
	}
	snap, err := a.Snapshot(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Commit(ctx, s.ID, snap.Version, readCall(1), sessions.Effects{}); err != nil {
		t.Fatal(err)
	}
	if err := b.Annotate(ctx, s.ID, 0, 1, []string{"untrusted_content"}, nil); err != nil {
		t.Fatal(err)
	}
	view, ok := a.Recent(s.ID)
	if !ok {
		t.Fatal("Recent = not ok; want the (stale) view")
	}
	if _, err := a.Commit(ctx, s.ID, view.Version, readCall(2), sessions.Effects{}); !errors.Is(err, sessions.ErrConflict) {
		t.Fatalf("Commit on a stale view = %v; want ErrConflict", err)
	}
	for i := 0; i < 8; i++ {
		if _, ok := a.Recent(s.ID); ok {
			t.Fatalf("Recent %d after a conflict = ok; want a read instead", i)
		}
		snap, err := a.Snapshot(ctx, s.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got := snap.History[0].ResultTags; len(got) != 1 || got[0] != "untrusted_content" {
			t.Fatalf("Snapshot History[0].ResultTags = %v; want the tag added through b", got)
		}
		if _, err := a.Commit(ctx, s.ID, snap.Version, readCall(3+i), sessions.Effects{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := a.Recent(s.ID); !ok {
		t.Fatal("Recent after the back-off = not ok; want the view again")
	}
}

// Recent offers no view of a session that ended, was frozen or changed through this replica,
// or whose lifetime or idle timeout passed by the store's clock.
func TestRedisRecentRefuses(t *testing.T) {
	srv := sessionstest.StartRedis(t)
	ctx := context.Background()
	clock := sessionstest.NewClock(time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC))
	for _, tc := range []struct {
		name   string
		change func(st *sessions.Redis, id string) error
	}{
		{"revoked", func(st *sessions.Redis, id string) error { _, err := st.Revoke(ctx, id, "test"); return err }},
		{"frozen", func(st *sessions.Redis, id string) error { _, err := st.Freeze(ctx, id, "test"); return err }},
		{"narrowed", func(st *sessions.Redis, id string) error {
			_, err := st.Narrow(ctx, id, []string{"files__write"})
			return err
		}},
		{"idle", func(st *sessions.Redis, id string) error { clock.Advance(10 * time.Minute); return nil }},
		{"lifetime", func(st *sessions.Redis, id string) error { clock.Advance(time.Hour); return nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newRedis(srv.Client(), sessionstest.Prefix(), clock)
			spec := testSpec()
			spec.IdleTimeout = 10 * time.Minute
			if tc.name == "lifetime" {
				spec.IdleTimeout = 0
			}
			s, _, err := st.Create(ctx, spec)
			if err != nil {
				t.Fatal(err)
			}
			snap, err := st.Snapshot(ctx, s.ID)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.Commit(ctx, s.ID, snap.Version, readCall(1), sessions.Effects{}); err != nil {
				t.Fatal(err)
			}
			if _, ok := st.Recent(s.ID); !ok {
				t.Fatal("Recent before the change = not ok; want the view")
			}
			if err := tc.change(st, s.ID); err != nil {
				t.Fatal(err)
			}
			if v, ok := st.Recent(s.ID); ok {
				t.Fatalf("Recent after %s = version %d, state %s; want no view", tc.name, v.Version, v.State)
			}
		})
	}
}

// A revoke or freeze made on another replica drops this replica's view as soon as its event
// arrives.
func TestRedisRecentDroppedByEvents(t *testing.T) {
	srv := sessionstest.StartRedis(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	prefix := sessionstest.Prefix()
	a := newRedis(srv.Client(), prefix, nil)
	b := newRedis(srv.Client(), prefix, nil)
	events, err := a.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range []sessions.EventKind{sessions.EventFrozen, sessions.EventRevoked, sessions.EventNarrowed} {
		s, _, err := a.Create(ctx, testSpec())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Snapshot(ctx, s.ID); err != nil {
			t.Fatal(err)
		}
		if _, ok := a.Recent(s.ID); !ok {
			t.Fatal("Recent after Snapshot = not ok; want the view")
		}
		switch kind {
		case sessions.EventFrozen:
			_, err = b.Freeze(ctx, s.ID, "test")
		case sessions.EventRevoked:
			_, err = b.Revoke(ctx, s.ID, "test")
		case sessions.EventNarrowed:
			_, err = b.Narrow(ctx, s.ID, []string{"files__write"})
		}
		if err != nil {
			t.Fatal(err)
		}
		for ev := range events {
			if ev.SessionID == s.ID && ev.Kind == kind {
				_ = a.Ack(ctx, ev)
				break
			}
		}
		if _, ok := a.Recent(s.ID); ok {
			t.Errorf("Recent after a %s event = ok; want no view", kind)
		}
	}
}

// A session made again for the same chosen token starts again at version 1: a commit on a
// version of the session that was there before is a conflict, not a commit on the new one.
func TestRedisCommitOnRecreatedSession(t *testing.T) {
	srv := sessionstest.StartRedis(t)
	ctx := context.Background()
	clock := sessionstest.NewClock(time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC))
	prefix := sessionstest.Prefix()
	a := newRedis(srv.Client(), prefix, clock)
	b := newRedis(srv.Client(), prefix, clock)
	spec := testSpec()
	spec.Token = strings.Repeat("k", 40)
	spec.Lifetime = time.Minute
	old, _, err := a.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := a.Snapshot(ctx, old.ID)
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Minute)
	fresh, _, err := b.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if fresh.ID != old.ID || fresh.Version != snap.Version {
		t.Fatalf("new session = id %s version %d; want id %s version %d", fresh.ID, fresh.Version, old.ID, snap.Version)
	}
	if _, err := a.Commit(ctx, old.ID, snap.Version, readCall(1), sessions.Effects{}); !errors.Is(err, sessions.ErrConflict) {
		t.Fatalf("Commit on the old session's version = %v; want ErrConflict", err)
	}
}

// replies records the answers of the scripts a client runs.
type replies struct {
	mu  sync.Mutex
	got [][]any
}

func (h *replies) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *replies) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if c, ok := cmd.(*redis.Cmd); ok && strings.HasPrefix(cmd.Name(), "eval") {
			if v, ok := c.Val().([]any); ok {
				h.mu.Lock()
				h.got = append(h.got, v)
				h.mu.Unlock()
			}
		}
		return err
	}
}

func (h *replies) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// answerBytes is the size of the strings in a script's answer.
func answerBytes(v any) int {
	switch v := v.(type) {
	case []any:
		n := 0
		for _, e := range v {
			n += answerBytes(e)
		}
		return n
	case string:
		return len(v)
	}
	return 8
}

// A commit's answer holds neither the result tags of the history nor the detector state the
// caller just sent: it grows with neither.
func TestRedisCommitAnswerIsSmall(t *testing.T) {
	srv := sessionstest.StartRedis(t)
	c := srv.Client()
	h := &replies{}
	c.AddHook(h)
	ctx := context.Background()
	st := newRedis(c, sessionstest.Prefix(), nil)
	s, _, err := st.Create(ctx, testSpec())
	if err != nil {
		t.Fatal(err)
	}
	v := s.Version
	detect := []byte(strings.Repeat("d", 4096))
	for i := 1; i <= 20; i++ {
		got, err := st.Commit(ctx, s.ID, v, readCall(i), sessions.Effects{Detect: detect})
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Annotate(ctx, s.ID, got.Version, int64(i), []string{"untrusted_content"}, nil); err != nil {
			t.Fatal(err)
		}
		v = got.Version + 1
	}
	h.mu.Lock()
	h.got = nil
	h.mu.Unlock()
	got, err := st.Commit(ctx, s.ID, v, readCall(21), sessions.Effects{Detect: detect})
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Detect) != string(detect) {
		t.Errorf("Commit answered detector state of %d bytes; want the %d sent", len(got.Detect), len(detect))
	}
	h.mu.Lock()
	answers := h.got
	h.mu.Unlock()
	if len(answers) != 1 || len(answers[0]) < 4 {
		t.Fatalf("Commit ran %d scripts; want 1 answering the meta", len(answers))
	}
	// The meta hash holds 4 KB of detector state and 20 result-tag fields.
	if n := answerBytes(answers[0]); n > 1024 {
		t.Errorf("Commit answer holds %d bytes; want under 1 KB", n)
	}
	// The full read still holds the tags.
	snap, err := st.Get(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if tags := snap.History[0].ResultTags; len(tags) != 1 {
		t.Errorf("Get History[0].ResultTags = %v; want [untrusted_content]", tags)
	}
}

// Calls of one session racing on one replica, each deciding on the view when there is one,
// read what others change while they change it; the race detector checks the sharing, and the
// view ends as a full read.
func TestRedisRecentConcurrent(t *testing.T) {
	srv := sessionstest.StartRedis(t)
	ctx := context.Background()
	prefix := sessionstest.Prefix()
	st := sessions.NewRedis(srv.Client(), sessions.RedisOptions{Prefix: prefix, HistoryBlock: 4})
	full := sessions.NewRedis(srv.Client(), sessions.RedisOptions{Prefix: prefix, HistoryBlock: 4, HistoryCache: -1})
	spec := testSpec()
	spec.HistoryLimit = 12
	s, _, err := st.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				for {
					view, ok := st.Recent(s.ID)
					if !ok {
						var err error
						if view, err = st.Snapshot(ctx, s.ID); err != nil {
							errs <- err
							return
						}
					}
					tags := 0
					for _, h := range view.History {
						tags += len(h.ResultTags) + len(h.Name)
					}
					got, err := st.Commit(ctx, s.ID, view.Version, readCall(g*100+i+tags%2), sessions.Effects{Detect: []byte{byte(g)}})
					if errors.Is(err, sessions.ErrConflict) {
						continue
					}
					if err != nil {
						errs <- err
						return
					}
					if i%2 == 0 {
						// A conflict only loses the tag: a later call changed the session.
						_ = st.Annotate(ctx, s.ID, got.Version, got.Calls+got.Denied, []string{fmt.Sprintf("g%d", g)}, nil)
					}
					break
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	want, err := full.Snapshot(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := st.Recent(s.ID)
	if !ok {
		if got, err = st.Snapshot(ctx, s.ID); err != nil {
			t.Fatal(err)
		}
	}
	sameSession(t, "after racing calls: view", got, want)
}
