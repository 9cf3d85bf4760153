package sessions_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/toolgate/toolgate/sessions"
	"github.com/toolgate/toolgate/sessions/sessionstest"
)

// BenchmarkSnapshotCommit measures one admission (Snapshot then Commit) of a session whose
// history is full (100 earlier calls), and reports p50/p99 latency.
func BenchmarkSnapshotCommit(b *testing.B) {
	stores := []struct {
		name string
		new  func(b *testing.B) sessions.Store
	}{
		{"Memory", func(b *testing.B) sessions.Store { return sessions.NewMemory(sessions.Options{}) }},
		{"Redis", func(b *testing.B) sessions.Store {
			srv := sessionstest.StartRedis(b)
			return newRedis(srv.Client(), sessionstest.Prefix(), nil)
		}},
		{"RedisNoHistoryCache", func(b *testing.B) sessions.Store {
			srv := sessionstest.StartRedis(b)
			return sessions.NewRedis(srv.Client(), sessions.RedisOptions{Prefix: sessionstest.Prefix(), HistoryCache: -1})
		}},
		{"RedisUncompressed", func(b *testing.B) sessions.Store {
			srv := sessionstest.StartRedis(b)
			return sessions.NewRedis(srv.Client(), sessions.RedisOptions{Prefix: sessionstest.Prefix(), HistoryBlock: -1})
		}},
	}
	for _, sc := range stores {
		b.Run(sc.name, func(b *testing.B) {
			st := sc.new(b)
			ctx := context.Background()
			sp := testSpec()
			sp.HistoryLimit = 100
			s, _, err := st.Create(ctx, sp)
			if err != nil {
				b.Fatal(err)
			}
			for i := range 100 {
				snap, _ := st.Snapshot(ctx, s.ID)
				if _, err := st.Commit(ctx, s.ID, snap.Version, readCall(i), sessions.Effects{}); err != nil {
					b.Fatal(err)
				}
			}
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				start := time.Now()
				snap, err := st.Snapshot(ctx, s.ID)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := st.Commit(ctx, s.ID, snap.Version, readCall(i), sessions.Effects{}); err != nil && !errors.Is(err, sessions.ErrConflict) {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(lat)
			if len(lat) > 0 {
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
			}
		})
	}
}

// BenchmarkRevokeEvent measures how long a revoke made on one Redis replica takes to reach a
// subscriber on another (the gateway's budget is 100 ms), and reports p50/p99.
func BenchmarkRevokeEvent(b *testing.B) {
	srv := sessionstest.StartRedis(b)
	prefix := sessionstest.Prefix()
	a := newRedis(srv.Client(), prefix, nil)
	other := newRedis(srv.Client(), prefix, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, err := other.Subscribe(ctx)
	if err != nil {
		b.Fatal(err)
	}
	var lat []time.Duration
	for b.Loop() {
		b.StopTimer()
		s, _, err := a.Create(ctx, testSpec())
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		if _, err := a.Revoke(ctx, s.ID, "bench"); err != nil {
			b.Fatal(err)
		}
		for ev := range events {
			if ev.SessionID == s.ID {
				break
			}
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	}
}

// BenchmarkAdmitAtScale measures admission (Snapshot then Commit, 100-call history) on Redis
// with 10 and with 10,000 live sessions in the store: admission touches only the keys of its
// own session, so the figures should not move with the number of sessions.
func BenchmarkAdmitAtScale(b *testing.B) {
	for _, live := range []int{10, 10_000} {
		b.Run(fmt.Sprintf("sessions=%d", live), func(b *testing.B) {
			srv := sessionstest.StartRedis(b)
			st := newRedis(srv.Client(), sessionstest.Prefix(), nil)
			ctx := context.Background()
			sp := testSpec()
			sp.HistoryLimit = 100
			ids := make([]string, live)
			for i := range ids {
				s, _, err := st.Create(ctx, sp)
				if err != nil {
					b.Fatal(err)
				}
				ids[i] = s.ID
			}
			// Fill the histories of the sessions the benchmark admits on.
			hot := ids[:min(len(ids), 10)]
			for _, id := range hot {
				for i := range 100 {
					snap, _ := st.Snapshot(ctx, id)
					if _, err := st.Commit(ctx, id, snap.Version, readCall(i), sessions.Effects{}); err != nil {
						b.Fatal(err)
					}
				}
			}
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				id := hot[i%len(hot)]
				start := time.Now()
				snap, err := st.Snapshot(ctx, id)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := st.Commit(ctx, id, snap.Version, readCall(i), sessions.Effects{}); err != nil && !errors.Is(err, sessions.ErrConflict) {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(lat)
			if len(lat) > 0 {
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
			}
		})
	}
}
