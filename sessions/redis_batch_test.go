package sessions_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/toolgate/toolgate/internal/faults"
	"github.com/toolgate/toolgate/sessions"
	"github.com/toolgate/toolgate/sessions/sessionstest"
)

// holdFirst is a go-redis hook that holds the first lone EVALSHA until release is closed, so
// that the commits started meanwhile queue behind it, and records the commands of each
// pipeline. onPipeline, when set, runs before a pipeline is sent.
type holdFirst struct {
	held, release chan struct{}
	once          sync.Once
	mu            sync.Mutex
	pipelines     [][]string // command names
	onPipeline    func(ctx context.Context, n int)
}

func newHoldFirst() *holdFirst {
	return &holdFirst{held: make(chan struct{}), release: make(chan struct{})}
}

func (h *holdFirst) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *holdFirst) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "evalsha" {
			h.once.Do(func() {
				close(h.held)
				<-h.release
			})
		}
		return next(ctx, cmd)
	}
}

func (h *holdFirst) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		var names []string
		for _, c := range cmds {
			names = append(names, c.Name())
		}
		h.mu.Lock()
		h.pipelines = append(h.pipelines, names)
		n := len(h.pipelines)
		h.mu.Unlock()
		if h.onPipeline != nil {
			h.onPipeline(ctx, n)
		}
		return next(ctx, cmds)
	}
}

func (h *holdFirst) recorded() [][]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.pipelines)
}

// batchStore returns a store on a fresh server whose client carries h, and sessions made on it.
func batchStore(t *testing.T, h *holdFirst, n int) (*sessionstest.RedisServer, *sessions.Redis, []*sessions.Session) {
	t.Helper()
	srv := sessionstest.StartRedis(t)
	if !srv.Own {
		t.Skip("needs its own redis-server")
	}
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = c.Close() })
	st, ss := hookedStore(t, c, h, n)
	return srv, st, ss
}

// hookedStore returns a store on c and n sessions made on it, then adds h to c.
func hookedStore(t *testing.T, c redis.UniversalClient, h *holdFirst, n int) (*sessions.Redis, []*sessions.Session) {
	t.Helper()
	st := newRedis(c, sessionstest.Prefix(), nil)
	var ss []*sessions.Session
	for range n {
		s, _, err := st.Create(context.Background(), testSpec())
		if err != nil {
			t.Fatal(err)
		}
		ss = append(ss, s)
	}
	c.AddHook(h)
	return st, ss
}

// commitAsync commits call i to s and sends the outcome on the returned channel.
func commitAsync(ctx context.Context, st *sessions.Redis, s *sessions.Session, i int) <-chan error {
	done := make(chan error, 1)
	go func() {
		got, err := st.Commit(ctx, s.ID, s.Version, readCall(i), sessions.Effects{})
		if err == nil && (got.ID != s.ID || got.Calls != 1 || got.Version != s.Version+1) {
			err = fmt.Errorf("Commit(%s) = session %s with %d calls at version %d; want %s, 1 call, version %d",
				s.ID, got.ID, got.Calls, got.Version, s.ID, s.Version+1)
		}
		done <- err
	}()
	return done
}

// waitQueued waits until n commits queue behind the batch in flight.
func waitQueued(t *testing.T, st *sessions.Redis, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for st.QueuedCommits() != n {
		if time.Now().After(deadline) {
			t.Fatalf("QueuedCommits() = %d; want %d", st.QueuedCommits(), n)
		}
		time.Sleep(time.Millisecond) // polling for goroutines to queue, not waiting for time
	}
}

// Commits that wait while another is in flight go out together in one pipeline, each with
// its own answer, also when Redis has lost the script meanwhile (NOSCRIPT). On Redis Cluster
// the pipeline spans the masters.
func TestRedisCommitBatch(t *testing.T) {
	t.Run("Standalone", func(t *testing.T) {
		srv := sessionstest.StartRedis(t)
		testCommitBatch(t, srv.Client(), 5)
	})
	t.Run("Cluster", func(t *testing.T) {
		if testing.Short() || os.Getenv("TOOLGATE_CLUSTER") == "" {
			t.Skip("starts a three-node Redis Cluster: set TOOLGATE_CLUSTER=1")
		}
		testCommitBatch(t, faults.StartCluster(t, 3).Client(t, 16), 13)
	})
}

func testCommitBatch(t *testing.T, c redis.UniversalClient, n int) {
	h := newHoldFirst()
	st, ss := hookedStore(t, c, h, n)
	ctx := context.Background()
	h.onPipeline = func(ctx context.Context, n int) {
		if n == 1 {
			c.ScriptFlush(ctx) // the batch of EVALSHA answers NOSCRIPT: sent again as EVAL
		}
	}
	first := commitAsync(ctx, st, ss[0], 0)
	<-h.held
	var rest []<-chan error
	for i, s := range ss[1:] {
		rest = append(rest, commitAsync(ctx, st, s, i+1))
		waitQueued(t, st, i+1)
	}
	close(h.release)
	for i, done := range append([]<-chan error{first}, rest...) {
		if err := <-done; err != nil {
			t.Errorf("commit %d: %v", i, err)
		}
	}
	want := [][]string{
		slices.Repeat([]string{"evalsha"}, n-1),
		slices.Repeat([]string{"eval"}, n-1),
	}
	// The ScriptFlush itself is a lone command; only pipelines are recorded.
	if got := h.recorded(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("pipelines = %v; want %v", got, want)
	}
	for i, s := range ss {
		snap, err := st.Snapshot(ctx, s.ID)
		if err != nil {
			t.Fatal(err)
		}
		wantArgs := readCall(i).Args
		if len(snap.History) != 1 || string(snap.History[0].Args) != string(wantArgs) {
			hj, _ := json.Marshal(snap.History)
			t.Errorf("history of session %d = %s; want one call with args %s", i, hj, wantArgs)
		}
	}
}

// A commit whose context ends while it waits returns at once and is never sent; the others
// are not affected, also when the caller that leads their batch gives up while it is sent.
func TestRedisCommitBatchCancel(t *testing.T) {
	h := newHoldFirst()
	_, st, ss := batchStore(t, h, 4)
	ctx := context.Background()
	first := commitAsync(ctx, st, ss[0], 0)
	<-h.held
	leadCtx, cancelLead := context.WithCancel(ctx)
	defer cancelLead()
	lead := commitAsync(leadCtx, st, ss[1], 1)
	waitQueued(t, st, 1)
	gone, cancelGone := context.WithCancel(ctx)
	left := commitAsync(gone, st, ss[2], 2)
	waitQueued(t, st, 2)
	other := commitAsync(ctx, st, ss[3], 3)
	waitQueued(t, st, 3)

	cancelGone()
	if err := <-left; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled commit: %v; want %v", err, context.Canceled)
	}
	waitQueued(t, st, 2)
	h.onPipeline = func(context.Context, int) { cancelLead() } // the batch is on its way
	close(h.release)
	for i, done := range []<-chan error{first, lead, other} {
		if err := <-done; err != nil {
			t.Errorf("commit %d: %v", i, err)
		}
	}
	if got := h.recorded(); len(got) != 1 || len(got[0]) != 2 {
		t.Errorf("pipelines = %v; want one of 2 commands", got)
	}
	s, err := st.Get(ctx, ss[2].ID)
	if err != nil {
		t.Fatal(err)
	}
	if s.Calls != 0 {
		t.Errorf("cancelled commit: session has %d calls; want 0", s.Calls)
	}
}

// A batch that loses its connection fails each of its commits as unavailable.
func TestRedisCommitBatchDown(t *testing.T) {
	h := newHoldFirst()
	srv, st, ss := batchStore(t, h, 4)
	ctx := context.Background()
	h.onPipeline = func(context.Context, int) { srv.Stop() }
	first := commitAsync(ctx, st, ss[0], 0)
	<-h.held
	var rest []<-chan error
	for i, s := range ss[1:] {
		rest = append(rest, commitAsync(ctx, st, s, i+1))
		waitQueued(t, st, i+1)
	}
	close(h.release)
	if err := <-first; err != nil {
		t.Errorf("commit sent before the server went down: %v", err)
	}
	for i, done := range rest {
		if err := <-done; !errors.Is(err, sessions.ErrUnavailable) {
			t.Errorf("commit %d: %v; want %v", i+1, err, sessions.ErrUnavailable)
		}
	}
}
