package sessions_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/toolgate/toolgate/sessions"
	"github.com/toolgate/toolgate/sessions/sessionstest"
)

// BenchmarkCommitRecent measures the gateway's usual admission on Redis: a decision on the
// view Recent holds, then one Commit that carries detector state and risk, on a session whose
// 100-entry history is full. Each of clients goroutines commits to its own session; with more
// than one, commits waiting at the same moment share a pipeline. It reports the requests the
// client sent per commit (a pipeline counts once), and the CPU time (user and system) the
// process spent per commit, which the syscalls of the requests dominate.
func BenchmarkCommitRecent(b *testing.B) {
	for _, clients := range []int{1, 8} {
		b.Run(map[int]string{1: "clients=1", 8: "clients=8"}[clients], func(b *testing.B) {
			srv := sessionstest.StartRedis(b)
			c := srv.Client()
			rt := &requests{}
			c.AddHook(rt)
			st := newRedis(c, sessionstest.Prefix(), nil)
			ctx := context.Background()
			sp := testSpec()
			sp.HistoryLimit = 100
			ids := make(chan string, clients)
			for range clients {
				s, _, err := st.Create(ctx, sp)
				if err != nil {
					b.Fatal(err)
				}
				for i := range 100 {
					commitRecent(b, st, s.ID, i)
				}
				ids <- s.ID
			}
			before, cpu := rt.n.Load(), cpuTime(b)
			var commits atomic.Int64
			b.ResetTimer()
			if clients == 1 {
				id := <-ids
				for i := 0; b.Loop(); i++ {
					commitRecent(b, st, id, i)
					commits.Add(1)
				}
			} else {
				b.SetParallelism((clients + 1) / 2) // 2 cores: 8 goroutines
				b.RunParallel(func(pb *testing.PB) {
					id := <-ids
					for i := 0; pb.Next(); i++ {
						commitRecent(b, st, id, i)
						commits.Add(1)
					}
				})
			}
			b.StopTimer()
			if n := commits.Load(); n > 0 {
				b.ReportMetric(float64(rt.n.Load()-before)/float64(n), "requests/commit")
				b.ReportMetric(float64((cpuTime(b)-cpu).Microseconds())/float64(n), "cpu-µs/commit")
			}
		})
	}
}

var benchDetect = []byte(`{"v":1,"taint":["web"],"seen":["` + strings.Repeat("ab12", 40) + `"]}`)

func commitRecent(b *testing.B, st *sessions.Redis, id string, i int) {
	snap, ok := st.Recent(id)
	if !ok {
		var err error
		if snap, err = st.Snapshot(context.Background(), id); err != nil {
			b.Fatal(err)
		}
	}
	risk := 0.25
	_, err := st.Commit(context.Background(), id, snap.Version, readCall(i), sessions.Effects{Detect: benchDetect, Risk: &risk})
	if err != nil && !errors.Is(err, sessions.ErrConflict) {
		b.Fatal(err)
	}
}

// cpuTime is the CPU time, user and system, the process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// requests counts the requests a go-redis client sends: each command alone, or each pipeline
// as one.
type requests struct{ n atomic.Int64 }

func (h *requests) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *requests) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

func (h *requests) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmds)
	}
}
