package sessions_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/toolgate/toolgate/sessions"
	"github.com/toolgate/toolgate/sessions/sessionstest"
)

// A replica that caches decoded history reads exactly what a replica without the cache reads,
// however many calls (committed through another replica, sealed into blocks or trimmed) came
// in between, and editing a returned history does not change the next one.
func TestRedisHistoryCacheMatchesFullRead(t *testing.T) {
	srv := sessionstest.StartRedis(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		block int
		steps []int // calls committed through the other replica before each read
	}{
		{"unchanged", 4, []int{3, 0, 0, 1, 0}},
		{"one at a time", 4, []int{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}},
		{"across blocks", 4, []int{2, 5, 9, 3, 7, 11}},
		{"more than the limit", 4, []int{5, 25, 1, 40, 2}},
		{"no blocks", -1, []int{2, 5, 9, 30, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prefix := sessionstest.Prefix()
			opts := sessions.RedisOptions{Prefix: prefix, HistoryBlock: tc.block}
			cached := sessions.NewRedis(srv.Client(), opts)
			opts.HistoryCache = -1
			full := sessions.NewRedis(srv.Client(), opts)
			spec := testSpec()
			spec.HistoryLimit = 20
			s, _, err := full.Create(ctx, spec)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for i, step := range tc.steps {
				for range step {
					n++
					snap, err := full.Snapshot(ctx, s.ID)
					if err != nil {
						t.Fatal(err)
					}
					rec := readCall(n)
					if n%3 == 0 {
						rec.Labels = []string{"private_data"}
						rec.ResultTags = []string{"own"}
					}
					if _, err := full.Commit(ctx, s.ID, snap.Version, rec, sessions.Effects{Denied: n%5 == 0}); err != nil {
						t.Fatal(err)
					}
					if n%4 == 0 {
						if err := full.Annotate(ctx, s.ID, 0, int64(n), []string{fmt.Sprintf("taint-%d", n)}, nil); err != nil {
							t.Fatal(err)
						}
					}
				}
				got, err := cached.Snapshot(ctx, s.ID)
				if err != nil {
					t.Fatal(err)
				}
				want, err := full.Snapshot(ctx, s.ID)
				if err != nil {
					t.Fatal(err)
				}
				gj, _ := json.Marshal(got)
				wj, _ := json.Marshal(want)
				if string(gj) != string(wj) {
					t.Fatalf("read %d after %d calls: cached Snapshot =\n%s\nwant\n%s", i, n, gj, wj)
				}
				// The caller owns what it got: scribbling on it must not reach the cache.
				for j := range got.History {
					got.History[j].Server = "scribbled"
					if len(got.History[j].ResultTags) > 0 {
						got.History[j].ResultTags[0] = "scribbled"
					}
				}
			}
		})
	}
}
