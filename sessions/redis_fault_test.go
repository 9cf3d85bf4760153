package sessions_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/toolgate/toolgate/internal/faults"
	"github.com/toolgate/toolgate/sessions"
	"github.com/toolgate/toolgate/sessions/sessionstest"
)

func faultSpec() sessions.Spec {
	return sessions.Spec{Agent: "agent-f", Scope: []string{"*"}, Lifetime: time.Hour}
}

// createSetup creates a session for a test's setup. Its client's timeouts
// are short, so that faults show quickly; on a loaded machine a setup call
// can exceed them, which is not what these tests are about: it is retried.
func createSetup(ctx context.Context, t *testing.T, st sessions.Store) *sessions.Session {
	t.Helper()
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		var s *sessions.Session
		if s, _, err = st.Create(ctx, faultSpec()); err == nil {
			return s
		}
		if !errors.Is(err, sessions.ErrUnavailable) {
			break
		}
	}
	t.Fatalf("create session: %v", err)
	return nil
}

func faultCall() sessions.CallRecord {
	return sessions.CallRecord{Server: "files", Tool: "read", Name: "files__read", Decision: "allow"}
}

// admit snapshots and commits one call, as the gateway does.
func admit(ctx context.Context, st sessions.Store, id string) error {
	snap, err := st.Snapshot(ctx, id)
	if err != nil {
		return err
	}
	_, err = st.Commit(ctx, id, snap.Version, faultCall(), sessions.Effects{})
	return err
}

// TestRedisKilledAndRestarted: while Redis is down every read and commit
// fails with ErrUnavailable (nothing is admitted unchecked); when it comes
// back the same store object works again, without a restart of toolgate.
// With persistence (appendonly) the sessions survive; without it they are
// gone and refused as not found, never admitted.
func TestRedisKilledAndRestarted(t *testing.T) {
	for _, tt := range []struct {
		name    string
		args    []string
		survive bool
	}{
		{"appendonly", []string{"--appendonly", "yes", "--appendfsync", "always"}, true},
		{"no persistence", nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			srv := faults.StartServer(t, tt.args...)
			c := redis.NewClient(&redis.Options{Addr: srv.Addr, DialTimeout: 200 * time.Millisecond,
				ReadTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond})
			t.Cleanup(func() { _ = c.Close() })
			st := sessions.NewRedis(c, sessions.RedisOptions{Prefix: sessionstest.Prefix()})
			live, _, err := st.Create(ctx, faultSpec())
			if err != nil {
				t.Fatal(err)
			}
			revoked, _, err := st.Create(ctx, faultSpec())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.Revoke(ctx, revoked.ID, "before the crash"); err != nil {
				t.Fatal(err)
			}

			srv.Kill()
			start := time.Now()
			for i := 0; i < 5; i++ {
				if err := admit(ctx, st, live.ID); !errors.Is(err, sessions.ErrUnavailable) {
					t.Fatalf("admit with Redis down = %v; want ErrUnavailable", err)
				}
			}
			if _, _, err := st.Create(ctx, faultSpec()); !errors.Is(err, sessions.ErrUnavailable) {
				t.Fatalf("Create with Redis down = %v; want ErrUnavailable", err)
			}
			t.Logf("Redis down: 6 refusals in %v", time.Since(start))

			srv.Start()
			// The client's dial circuit breaker probes once a second: poll
			// until the store answers again (an async event, with a deadline).
			back := time.Now()
			deadline := back.Add(15 * time.Second)
			for err = admit(ctx, st, live.ID); errors.Is(err, sessions.ErrUnavailable); err = admit(ctx, st, live.ID) {
				if time.Now().After(deadline) {
					t.Fatalf("store still unavailable 15s after Redis came back: %v", err)
				}
				time.Sleep(20 * time.Millisecond)
			}
			t.Logf("Redis back: store serving again after %v", time.Since(back))
			switch {
			case tt.survive && err != nil:
				t.Fatalf("admit after restart (appendonly) = %v; want admitted", err)
			case !tt.survive && !errors.Is(err, sessions.ErrNotFound):
				t.Fatalf("admit after restart (no persistence) = %v; want ErrNotFound", err)
			}
			if err := admit(ctx, st, revoked.ID); err == nil {
				t.Fatalf("admit of a session revoked before the crash succeeded after restart")
			}
			s, _, err := st.Create(ctx, faultSpec())
			if err != nil {
				t.Fatalf("Create after restart: %v", err)
			}
			if err := admit(ctx, st, s.ID); err != nil {
				t.Fatalf("admit on a new session after restart: %v", err)
			}
		})
	}
}

// TestRedisSlowed: a proxy delays every packet to Redis by two seconds.
// A call waits for at most the client's timeouts and is then refused with
// ErrUnavailable; once the delay is gone it is admitted again.
func TestRedisSlowed(t *testing.T) {
	ctx := context.Background()
	srv := sessionstest.StartRedis(t)
	proxy := faults.StartProxy(t, srv.Addr)
	const timeout = 200 * time.Millisecond
	c := redis.NewClient(&redis.Options{Addr: proxy.Addr, DialTimeout: timeout, ReadTimeout: timeout, WriteTimeout: timeout})
	t.Cleanup(func() { _ = c.Close() })
	st := sessions.NewRedis(c, sessions.RedisOptions{Prefix: sessionstest.Prefix()})
	s := createSetup(ctx, t, st)
	proxy.SetDelay(2 * time.Second)
	start := time.Now()
	err := admit(ctx, st, s.ID)
	waited := time.Since(start)
	if !errors.Is(err, sessions.ErrUnavailable) {
		t.Fatalf("admit through a 2s-slow Redis = %v; want ErrUnavailable", err)
	}
	// go-redis retries a timed-out read up to MaxRetries (3) times: the
	// bound is (retries+1) x timeout plus backoff, far under the delay x retries.
	if limit := 4*timeout + time.Second; waited > limit {
		t.Errorf("refusal came after %v; want it bounded by about %v", waited, limit)
	}
	t.Logf("slow Redis: refused after %v (timeout %v)", waited, timeout)
	proxy.SetDelay(0)
	proxy.Cut(false) // drop connections that still carry late answers
	if err := admit(ctx, st, s.ID); err != nil {
		t.Fatalf("admit after the delay is gone = %v; want admitted", err)
	}
}

// TestSentinelFailover: revocations made before a Sentinel failover are
// still in force after it. The master is killed with SIGKILL right after
// the revokes; the sentinel promotes the replica; the same store (a
// Sentinel client) follows it. Every revoked session must be refused after
// the failover: still revoked, or not found. Live sessions may be admitted.
func TestSentinelFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Sentinel group and waits for a failover")
	}
	ctx := context.Background()
	sent := faults.StartSentinel(t)
	c := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: sent.Name, SentinelAddrs: []string{sent.Sentinel.Addr},
		DialTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = c.Close() })
	st := sessions.NewRedis(c, sessions.RedisOptions{Prefix: sessionstest.Prefix()})

	const n = 200
	var ids []string
	for i := 0; i < n; i++ {
		ids = append(ids, createSetup(ctx, t, st).ID)
	}
	// Revoke every other session, the last ones just before the kill.
	for i := 0; i < n; i += 2 {
		if _, err := st.Revoke(ctx, ids[i], "before failover"); err != nil {
			t.Fatal(err)
		}
	}
	old := sent.Master.Addr
	sent.Master.Kill()
	start := time.Now()
	deadline := start.Add(30 * time.Second)
	for {
		a, err := sent.MasterAddr(ctx)
		if err == nil && a != old {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no failover within 30s (master %s, %v)", a, err)
		}
		time.Sleep(50 * time.Millisecond) // polling the sentinel for an async event
	}
	promoted := time.Since(start)
	// The store follows the new master by itself; calls are refused until it does.
	refusedDuring := 0
	for {
		err := admit(ctx, st, ids[1])
		if err == nil {
			break
		}
		if !errors.Is(err, sessions.ErrUnavailable) {
			na, _ := sent.MasterAddr(ctx)
			nc := redis.NewClient(&redis.Options{Addr: na})
			size, _ := nc.DBSize(ctx).Result()
			role, _ := nc.Do(ctx, "ROLE").Result()
			nc.Close()
			t.Logf("new master %s (replica was %s): dbsize %d role %v", na, sent.Replica.Addr, size, role)
			t.Fatalf("admit of a live session during failover = %v; want admitted or ErrUnavailable", err)
		}
		refusedDuring++
		if time.Now().After(deadline) {
			t.Fatalf("store did not follow the new master within 30s: %v", err)
		}
	}
	t.Logf("failover: replica promoted after %v, store serving after %v (%d calls refused meanwhile)", promoted, time.Since(start), refusedDuring)
	lost := 0
	for i := 0; i < n; i += 2 {
		err := admit(ctx, st, ids[i])
		var se *sessions.StateError
		switch {
		case errors.As(err, &se) && se.State == sessions.StateRevoked:
		case errors.Is(err, sessions.ErrNotFound):
			lost++
		default:
			t.Errorf("session %d revoked before the failover: admit after it = %v; want refused as revoked", i, err)
		}
	}
	t.Logf("failover: %d of %d revoked sessions refused as revoked, %d as not found", n/2-lost, n/2, lost)
}
