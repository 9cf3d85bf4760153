package sessions_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/toolgate/toolgate/sessions"
	"github.com/toolgate/toolgate/sessions/sessionstest"
)

func newRedis(c redis.UniversalClient, prefix string, clock sessions.Clock) *sessions.Redis {
	return sessions.NewRedis(c, sessions.RedisOptions{Options: sessions.Options{Clock: clock}, Prefix: prefix})
}

func testSpec() sessions.Spec {
	return sessions.Spec{Agent: "agent-1", Scope: []string{"files__*"}, Lifetime: time.Hour}
}

func readCall(i int) sessions.CallRecord {
	return sessions.CallRecord{Server: "files", Tool: "read_file", Name: "files__read_file",
		Args: json.RawMessage(fmt.Sprintf(`{"path":"/tmp/f%03d.txt"}`, i%1000)), Decision: "allow"}
}

// Two stores on one server stand for two replicas: a change made through one is seen, and
// its event delivered, through the other.
func TestRedisReplicas(t *testing.T) {
	srv := sessionstest.StartRedis(t)
	prefix := sessionstest.Prefix()
	a := newRedis(srv.Client(), prefix, nil)
	b := newRedis(srv.Client(), prefix, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, err := b.Subscribe(ctx)
	if err != nil {
		t.Fatalf("Subscribe error: %v", err)
	}
	s, token, err := a.Create(ctx, testSpec())
	if err != nil {
		t.Fatal(err)
	}
	snap, err := b.LookupToken(ctx, sessions.HashToken(token))
	if err != nil {
		t.Fatalf("replica b: LookupToken of a session made on a: %v", err)
	}
	if _, err := a.Revoke(ctx, s.ID, "incident 42"); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-events:
		want := sessions.Event{SessionID: s.ID, Agent: "agent-1", Kind: sessions.EventRevoked, Reason: "incident 42", Version: s.Version + 1}
		if ev != want {
			t.Errorf("replica b got %+v; want %+v", ev, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("replica b got no event within 5s")
	}
	_, err = b.Commit(ctx, s.ID, snap.Version, readCall(1), sessions.Effects{})
	var se *sessions.StateError
	if !errors.As(err, &se) || se.State != sessions.StateRevoked {
		t.Errorf("replica b: Commit after a revoke on a: error = %v; want a StateError for revoked", err)
	}
}

// Redis stops mid-run: every operation fails with ErrUnavailable (nothing is admitted); when it
// comes back on the same port the same Store works again, and subscriptions resume.
func TestRedisRestart(t *testing.T) {
	srv := sessionstest.StartRedis(t)
	if !srv.Own {
		t.Skip("needs its own redis-server to stop")
	}
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: 1, DialTimeout: 200 * time.Millisecond})
	defer c.Close()
	st := newRedis(c, sessionstest.Prefix(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, err := st.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s, _, err := st.Create(ctx, testSpec())
	if err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	down := []struct {
		name string
		do   func() error
	}{
		{"Snapshot", func() error { _, err := st.Snapshot(ctx, s.ID); return err }},
		{"Commit", func() error { _, err := st.Commit(ctx, s.ID, s.Version, readCall(1), sessions.Effects{}); return err }},
		{"Create", func() error { _, _, err := st.Create(ctx, testSpec()); return err }},
		{"LookupToken", func() error { _, err := st.LookupToken(ctx, [32]byte{}); return err }},
		{"Revoke", func() error { _, err := st.Revoke(ctx, s.ID, "x"); return err }},
		{"List", func() error { _, err := st.List(ctx, sessions.ListOptions{}); return err }},
		{"Reap", func() error { _, err := st.Reap(ctx); return err }},
	}
	for _, tt := range down {
		if err := tt.do(); !errors.Is(err, sessions.ErrUnavailable) {
			t.Errorf("%s with Redis down: error = %v; want ErrUnavailable", tt.name, err)
		}
	}
	srv.Start()
	// The data is gone (no persistence); the store must work again without being recreated.
	var s2 *sessions.Session
	deadline := time.Now().Add(10 * time.Second)
	for {
		s2, _, err = st.Create(ctx, testSpec())
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Create 10s after Redis restarted: %v", err)
		}
		time.Sleep(20 * time.Millisecond) // polling for reconnection
	}
	if _, err := st.Snapshot(ctx, s2.ID); err != nil {
		t.Errorf("Snapshot after restart: %v", err)
	}
	// The subscription reconnects by itself: revoke fresh sessions until an event arrives.
	deadline = time.Now().Add(20 * time.Second)
	for {
		s3, _, err := st.Create(ctx, testSpec())
		if err == nil {
			_, _ = st.Revoke(ctx, s3.ID, "probe")
		}
		select {
		case ev := <-events:
			if ev.Kind == sessions.EventRevoked && ev.SessionID == s3.ID {
				return
			}
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("no event through the old subscription 20s after Redis restarted")
		}
	}
}

// Keys: one hash tag per session, no token in clear, TTL = remaining lifetime (+ grace),
// history capped.
func TestRedisKeys(t *testing.T) {
	srv := sessionstest.StartRedis(t)
	c := srv.Client()
	prefix := sessionstest.Prefix()
	st := newRedis(c, prefix, nil)
	ctx := context.Background()
	sp := testSpec()
	sp.HistoryLimit = 10
	s, token, err := st.Create(ctx, sp)
	if err != nil {
		t.Fatal(err)
	}
	v := s.Version
	for i := range 15 {
		got, err := st.Commit(ctx, s.ID, v, readCall(i), sessions.Effects{})
		if err != nil {
			t.Fatalf("Commit %d: %v", i, err)
		}
		v = got.Version
	}
	keys, err := c.Keys(ctx, prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(keys)
	var sessionKeys []string
	for _, k := range keys {
		if strings.Contains(k, "{") {
			sessionKeys = append(sessionKeys, k)
			if !strings.Contains(k, "{"+s.ID+"}") {
				t.Errorf("key %q lacks the hash tag {%s}", k, s.ID)
			}
			ttl, err := c.PTTL(ctx, k).Result()
			if err != nil || ttl <= 59*time.Minute || ttl > time.Hour+time.Minute {
				t.Errorf("PTTL(%s) = %v, %v; want about the remaining lifetime (1h) plus grace (1m)", k, ttl, err)
			}
		}
		dump, _ := c.Dump(ctx, k).Result()
		if strings.Contains(dump, token) || strings.Contains(k, token) {
			t.Errorf("key %s holds the token in clear", k)
		}
		vals, _ := c.HGetAll(ctx, k).Result()
		for f, val := range vals {
			if strings.Contains(val, token[4:]) {
				t.Errorf("key %s field %s holds the token", k, f)
			}
		}
	}
	if len(sessionKeys) != 2 {
		t.Errorf("session keys = %v; want the meta hash and the history list", sessionKeys)
	}
	if n, _ := c.LLen(ctx, prefix+":{"+s.ID+"}:h").Result(); n != 10 {
		t.Errorf("history list length = %d; want 10 (the limit)", n)
	}
}

// TestRedisMemory measures used_memory per session with a 100-call history of small args
// (readCall: {"path":"/tmp/f012.txt"}), indexes included. It takes a while (about a million
// commits), so it runs only with TOOLGATE_REDIS_MEMORY=1; TOOLGATE_REDIS_MEMORY_SESSIONS and
// TOOLGATE_REDIS_MEMORY_CALLS change the counts.
func TestRedisMemory(t *testing.T) {
	if os.Getenv("TOOLGATE_REDIS_MEMORY") == "" {
		t.Skip("set TOOLGATE_REDIS_MEMORY=1 to measure Redis memory per session")
	}
	sessionsN, calls := 10000, 100
	if n, err := strconv.Atoi(os.Getenv("TOOLGATE_REDIS_MEMORY_SESSIONS")); err == nil && n > 0 {
		sessionsN = n
	}
	if n, err := strconv.Atoi(os.Getenv("TOOLGATE_REDIS_MEMORY_CALLS")); err == nil && n > 0 {
		calls = n
	}
	srv := sessionstest.StartRedis(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, PoolSize: 32})
	defer c.Close()
	st := newRedis(c, sessionstest.Prefix(), nil)
	ctx := context.Background()
	before := usedMemory(t, c)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < sessionsN; i += 16 {
				sp := testSpec()
				sp.Agent = fmt.Sprintf("agent-%d", i%100)
				s, _, err := st.Create(ctx, sp)
				if err != nil {
					errs <- err
					return
				}
				v := s.Version
				for j := range calls {
					got, err := st.Commit(ctx, s.ID, v, readCall(j), sessions.Effects{})
					if err != nil {
						errs <- err
						return
					}
					v = got.Version
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	after := usedMemory(t, c)
	per := float64(after-before) / float64(sessionsN)
	t.Logf("Redis used_memory: %d -> %d bytes for %d sessions with %d-call histories: %.0f bytes/session",
		before, after, sessionsN, calls, per)
	if per > 8192 {
		t.Errorf("%.0f bytes per session; want well under 8 KB (target 4 KB)", per)
	}
}

func usedMemory(t *testing.T, c *redis.Client) int64 {
	t.Helper()
	info, err := c.Info(context.Background(), "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	t.Fatal("INFO memory has no used_memory")
	return 0
}

// A long history is sealed into compressed blocks; what is kept stays bounded and reads back
// as the last HistoryLimit calls in order.
func TestRedisHistoryBlocks(t *testing.T) {
	srv := sessionstest.StartRedis(t)
	c := srv.Client()
	prefix := sessionstest.Prefix()
	st := newRedis(c, prefix, nil)
	ctx := context.Background()
	sp := testSpec()
	sp.HistoryLimit = 40
	s, _, err := st.Create(ctx, sp)
	if err != nil {
		t.Fatal(err)
	}
	v := s.Version
	for i := range 200 {
		got, err := st.Commit(ctx, s.ID, v, readCall(i), sessions.Effects{Denied: i%7 == 0})
		if err != nil {
			t.Fatalf("Commit %d: %v", i, err)
		}
		v = got.Version
		blocks, _ := c.LLen(ctx, prefix+":{"+s.ID+"}:b").Result()
		tail, _ := c.LLen(ctx, prefix+":{"+s.ID+"}:h").Result()
		if kept := blocks*16 + tail; kept > 40+16 || (i >= 40 && kept < 40) {
			t.Fatalf("after commit %d: %d blocks and %d tail entries; want 40..56 entries kept", i, blocks, tail)
		}
	}
	snap, err := st.Snapshot(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.History) != 40 {
		t.Fatalf("len(History) = %d; want 40", len(snap.History))
	}
	for i, r := range snap.History {
		want := fmt.Sprintf(`{"path":"/tmp/f%03d.txt"}`, 160+i)
		if r.Seq != int64(161+i) || string(r.Args) != want {
			t.Errorf("History[%d] = seq %d args %s; want seq %d args %s", i, r.Seq, r.Args, 161+i, want)
		}
	}
}
