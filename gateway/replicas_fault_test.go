package gateway_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
	"github.com/redis/go-redis/v9"

	"github.com/toolgate/toolgate/sessions"
	"github.com/toolgate/toolgate/sessions/sessionstest"
)

// hangUpstream is an upstream with two tools: work answers at once; hang
// holds the call until it is cancelled (or 10 s pass). It records, per
// session, when each call arrived and when each hanging call was cancelled.
type hangUpstream struct {
	mu        sync.Mutex
	arrived   map[string][]received
	cancelled map[string][]time.Time
}

func startHangUpstream(t *testing.T) (*hangUpstream, string) {
	t.Helper()
	u := &hangUpstream{arrived: map[string][]received{}, cancelled: map[string][]time.Time{}}
	note := func(req mcp.CallToolRequest) string {
		var session string
		var seq float64
		if req.Params.Meta != nil {
			session, _ = req.Params.Meta.AdditionalFields["io.toolgate/session"].(string)
			seq, _ = req.Params.Meta.AdditionalFields["io.toolgate/call"].(float64)
		}
		u.mu.Lock()
		u.arrived[session] = append(u.arrived[session], received{seq: int64(seq), at: time.Now()})
		u.mu.Unlock()
		return session
	}
	s := server.NewMCPServer("hang", "1.0.0", server.WithToolCapabilities(false))
	s.AddTool(mcp.NewTool("work", mcp.WithDescription("Answers at once.")),
		func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			note(req)
			return mcp.NewToolResultText("done"), nil
		})
	s.AddTool(mcp.NewTool("hang", mcp.WithDescription("Holds the call until it is cancelled.")),
		func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			session := note(req)
			select {
			case <-ctx.Done():
				u.mu.Lock()
				u.cancelled[session] = append(u.cancelled[session], time.Now())
				u.mu.Unlock()
				return nil, ctx.Err()
			case <-time.After(10 * time.Second):
				return mcp.NewToolResultText("not cancelled"), nil
			}
		})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/mcp", server.NewStreamableHTTPServer(s))
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return u, "http://" + ln.Addr().String() + "/mcp"
}

func (u *hangUpstream) of(session string) ([]received, []time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.arrived[session]), slices.Clone(u.cancelled[session])
}

// rawCall posts one tools/call (protocol 2026-07-28) and returns the status
// and body.
func rawCall(hc *http.Client, base, token, tool string, id int) (int, string) {
	body := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":%q,"arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"replicas","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}}}`, id, tool)
	req, _ := http.NewRequest(http.MethodPost, base+"/mcp", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("MCP-Protocol-Version", mcp.ProtocolVersion20260728)
	req.Header.Set("Mcp-Method", "tools/call")
	req.Header.Set("Mcp-Name", tool)
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// threeReplicas starts three gateway replicas on one Redis, each with its
// own client (its own connections and event subscription), all in front
// of upstream as server "web".
func threeReplicas(t *testing.T, upstream, policy string) ([]*replica, []sessions.Store) {
	t.Helper()
	srv := sessionstest.StartRedis(t)
	prefix := sessionstest.Prefix()
	var reps []*replica
	var stores []sessions.Store
	for i := 0; i < 3; i++ {
		rc := redis.NewClient(&redis.Options{Addr: srv.Addr, PoolSize: 64})
		t.Cleanup(func() { _ = rc.Close() })
		st := sessions.NewRedis(rc, sessions.RedisOptions{Prefix: prefix})
		stores = append(stores, st)
		reps = append(reps, startReplica(t, replicaOpts{store: st, upstream: upstream, policy: policy}))
	}
	return reps, stores
}

// TestThreeReplicasSameDecisions: a session's calls spread at random over
// three replicas get the same decisions and leave the same history as the
// same calls on one replica, with a policy that reads the history.
func TestThreeReplicasSameDecisions(t *testing.T) {
	const policy = `
rules:
  - id: at-most-three-works
    match: {tools: [web__work]}
    when: history.filter(h, h.name == "web__work" && h.decision == "allow").size() >= 3
    action: deny
    message: three works are enough
`
	_, upURL := startHangUpstream(t)
	reps, stores := threeReplicas(t, upURL, policy)
	hc := &http.Client{}
	tools := []string{"web__work", "demo__list_files", "web__work", "web__work", "web__work", "demo__list_files", "web__work"}
	run := func(pick func(i int) *replica) (decisions []string, hist []string) {
		token := mintToken(t, pick(0).url, "agent-1", sessionKeys["KEY1"], "")
		for i, tool := range tools {
			status, body := rawCall(hc, pick(i).url, token, tool, i+1)
			ok := status == 200 && !strings.Contains(body, `"isError":true`)
			decisions = append(decisions, fmt.Sprintf("%s:%v", tool, ok))
		}
		s, err := stores[0].LookupToken(context.Background(), sessions.HashToken(token))
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range s.History {
			hist = append(hist, fmt.Sprintf("%d %s %s %v", h.Seq, h.Name, h.Decision, h.Rules))
		}
		return decisions, hist
	}
	oneDec, oneHist := run(func(int) *replica { return reps[0] })
	if want := "web__work:false"; oneDec[len(oneDec)-1] != want {
		t.Fatalf("on one replica the 5th work call was %s; want %s (the policy reads the history)", oneDec[len(oneDec)-1], want)
	}
	for trial := 0; trial < 10; trial++ {
		dec, hist := run(func(int) *replica { return reps[rand.IntN(3)] })
		if !slices.Equal(dec, oneDec) {
			t.Fatalf("trial %d: decisions over three replicas = %v; want %v as on one", trial, dec, oneDec)
		}
		if !slices.Equal(hist, oneHist) {
			t.Fatalf("trial %d: history over three replicas = %v; want %v as on one", trial, hist, oneHist)
		}
	}
}

func replicaTrials() int {
	if n, err := strconv.Atoi(os.Getenv("TOOLGATE_REPLICA_TRIALS")); err == nil && n > 0 {
		return n
	}
	return 30
}

// TestThreeReplicasRevoke: a session has a hanging call in flight on each
// of three replicas and more calls arriving at random replicas; it is
// revoked through a random replica's store. Then:
//   - no call started after the revoke was acknowledged succeeds;
//   - the upstream never receives a call the store did not admit;
//   - every in-flight call on every replica is cancelled (the latency from
//     the acknowledgement to the upstream seeing the cancellation is
//     reported as p50/p99/max);
//   - upstream receipts later than the acknowledgement (calls admitted
//     before it, still on the wire) are counted and reported.
//
// TOOLGATE_REPLICA_TRIALS sets the trials (30 by default, 1,000 in CI).
func TestThreeReplicasRevoke(t *testing.T) {
	if testing.Short() {
		t.Skip("long")
	}
	up, upURL := startHangUpstream(t)
	reps, stores := threeReplicas(t, upURL, "")
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	trials := replicaTrials()
	var latencies []time.Duration
	var late, admittedTotal, okAfter int
	for trial := 0; trial < trials; trial++ {
		token := mintToken(t, reps[trial%3].url, "agent-1", sessionKeys["KEY1"], "")
		sess, err := stores[0].LookupToken(context.Background(), sessions.HashToken(token))
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for i, r := range reps {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rawCall(hc, r.url, token, "web__hang", 1000+i)
			}()
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			arrived, _ := up.of(sess.ID)
			if len(arrived) >= 3 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("trial %d: %d of 3 hanging calls reached the upstream in 10s", trial, len(arrived))
			}
			time.Sleep(time.Millisecond) // polling for an async event
		}
		var ack atomic.Int64
		var after atomic.Int64
		for g := 0; g < 6; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 6; i++ {
					start := time.Now().UnixNano()
					status, body := rawCall(hc, reps[rand.IntN(3)].url, token, "web__work", g*100+i)
					if status == 200 && strings.Contains(body, `"done"`) {
						if a := ack.Load(); a != 0 && start > a {
							after.Add(1)
						}
					}
				}
			}()
		}
		time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond) // a random moment for the revoke
		if _, err := stores[rand.IntN(3)].Revoke(context.Background(), sess.ID, "trial"); err != nil {
			t.Fatal(err)
		}
		ackAt := time.Now()
		ack.Store(ackAt.UnixNano())
		wg.Wait()

		final, err := stores[0].Get(context.Background(), sess.ID)
		if err != nil {
			t.Fatal(err)
		}
		admitted := map[int64]bool{}
		for _, h := range final.History {
			if h.Decision == "allow" {
				admitted[h.Seq] = true
			}
		}
		admittedTotal += len(admitted)
		arrived, cancelled := up.of(sess.ID)
		for _, a := range arrived {
			if !admitted[a.seq] {
				t.Fatalf("trial %d: the upstream received call %d, which the store never admitted", trial, a.seq)
			}
			if a.at.After(ackAt) {
				late++
			}
		}
		if len(cancelled) != 3 {
			t.Fatalf("trial %d: %d of 3 in-flight calls were cancelled at the upstream; want all 3", trial, len(cancelled))
		}
		for _, c := range cancelled {
			latencies = append(latencies, c.Sub(ackAt))
		}
		okAfter += int(after.Load())
		if n := after.Load(); n != 0 {
			t.Fatalf("trial %d: %d calls started after the revoke was acknowledged and succeeded", trial, n)
		}
	}
	slices.Sort(latencies)
	pct := func(p float64) time.Duration { return latencies[min(len(latencies)-1, int(p*float64(len(latencies))))] }
	t.Logf("%d trials, 3 replicas: %d calls admitted; %d calls started after an acknowledged revoke succeeded; "+
		"%d upstream receipts later than the acknowledgement (admitted before it); in-flight cancellation after the acknowledgement: "+
		"p50 %v, p99 %v, max %v (%d calls)", trials, admittedTotal, okAfter, late, pct(0.5), pct(0.99), latencies[len(latencies)-1], len(latencies))
}
