package faults_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/toolgate/toolgate/sessions"
	"github.com/toolgate/toolgate/sessions/sessionstest"
)

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// TestSoak keeps many sessions live on one Redis and admits calls on them
// from concurrent workers (snapshot, then commit, retrying conflicts, as
// the gateway does), revoking and replacing a few as it goes. It reports,
// per window, the heap in use and the p50/p99 admit latency, so that a
// run shows whether memory and latency stay flat. Nothing here asserts on
// time; it fails on a wrong answer from the store or on heap growth of
// more than 4x between the first and last window.
//
// TOOLGATE_SOAK_SESSIONS (default 1,000; 10,000 in the soak run),
// TOOLGATE_SOAK_SECONDS (default 3) and TOOLGATE_SOAK_WORKERS (default 32)
// size it.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak")
	}
	nSessions := envInt("TOOLGATE_SOAK_SESSIONS", 1000)
	seconds := envInt("TOOLGATE_SOAK_SECONDS", 3)
	workers := envInt("TOOLGATE_SOAK_WORKERS", 32)
	ctx := context.Background()
	srv := sessionstest.StartRedis(t)
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr, PoolSize: workers + 8})
	t.Cleanup(func() { _ = rc.Close() })
	st := sessions.NewRedis(rc, sessions.RedisOptions{Prefix: sessionstest.Prefix()})
	spec := sessions.Spec{Agent: "soak", Scope: []string{"*"}, Lifetime: time.Hour, HistoryLimit: 64}
	ids := make([]atomic.Value, nSessions)
	for i := range ids {
		s, _, err := st.Create(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		ids[i].Store(s.ID)
	}
	rec := sessions.CallRecord{Server: "files", Tool: "read", Name: "files__read", Decision: "allow",
		Args: []byte(`{"path":"/srv/data/report.txt"}`)}

	type window struct {
		lat  []time.Duration
		heap uint64
	}
	var mu sync.Mutex
	var cur []time.Duration
	var windows []window
	var failures atomic.Int64
	var errMu sync.Mutex
	var firstErr error
	var refused atomic.Int64
	stop := time.Now().Add(time.Duration(seconds) * time.Second)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local []time.Duration
			for time.Now().Before(stop) {
				i := rand.IntN(nSessions)
				id := ids[i].Load().(string)
				start := time.Now()
				var err error
				for try := 0; try < 10; try++ {
					var snap *sessions.Session
					if snap, err = st.Snapshot(ctx, id); err != nil {
						break
					}
					if _, err = st.Commit(ctx, id, snap.Version, rec, sessions.Effects{}); !errors.Is(err, sessions.ErrConflict) {
						break
					}
				}
				local = append(local, time.Since(start))
				switch {
				case errors.Is(err, sessions.ErrNotActive):
					refused.Add(1) // another worker revoked it a moment ago: refused, as it must be
				case err != nil:
					failures.Add(1)
					errMu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					errMu.Unlock()
				}
				// Now and then an operator revokes a session and an agent opens a new one.
				if rand.IntN(200) == 0 {
					if _, err := st.Revoke(ctx, id, "soak"); err != nil {
						failures.Add(1)
					}
					if s, _, err := st.Create(ctx, spec); err == nil {
						ids[i].Store(s.ID)
					} else {
						failures.Add(1)
					}
				}
				if len(local) == 256 {
					mu.Lock()
					cur = append(cur, local...)
					mu.Unlock()
					local = local[:0]
				}
			}
			mu.Lock()
			cur = append(cur, local...)
			mu.Unlock()
		}()
	}
	tick := time.NewTicker(time.Second)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	sample := func() {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		mu.Lock()
		windows = append(windows, window{lat: cur, heap: ms.HeapInuse})
		cur = nil
		mu.Unlock()
	}
loop:
	for {
		select {
		case <-tick.C:
			sample()
		case <-done:
			break loop
		}
	}
	tick.Stop()
	sample()
	if n := failures.Load(); n > 0 {
		t.Fatalf("%d admits failed; first: %v", n, firstErr)
	}
	total := 0
	for i, w := range windows {
		if len(w.lat) == 0 {
			continue
		}
		total += len(w.lat)
		slices.Sort(w.lat)
		t.Logf("window %2d: %6d admits, p50 %8v, p99 %8v, heap in use %5.1f MiB", i, len(w.lat),
			w.lat[len(w.lat)/2], w.lat[len(w.lat)*99/100], float64(w.heap)/(1<<20))
	}
	t.Logf("soak: %d live sessions, %d workers, %ds: %d admits (%d refused: revoked meanwhile)", nSessions, workers, seconds, total, refused.Load())
	if first, last := windows[0].heap, windows[len(windows)-1].heap; last > 4*first {
		t.Errorf("heap in use grew from %d to %d bytes over the soak; want it flat", first, last)
	}
}
