package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
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

// countingUpstream records every call it receives with the session and
// call number toolgate put in _meta, and when it was received.
type countingUpstream struct {
	mu        sync.Mutex
	calls     map[string][]received // by session
	cancelled atomic.Int64
}

type received struct {
	seq int64
	at  time.Time
}

func startCountingUpstream(t *testing.T) (*countingUpstream, string) {
	t.Helper()
	u := &countingUpstream{calls: map[string][]received{}}
	s := server.NewMCPServer("counting", "1.0.0", server.WithToolCapabilities(false))
	s.AddTool(mcp.NewTool("work", mcp.WithDescription("Records the call, then works for up to 2ms.")),
		func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			select {
			case <-ctx.Done():
				u.cancelled.Add(1)
				return nil, ctx.Err()
			case <-time.After(time.Duration(rand.IntN(2000)) * time.Microsecond):
			}
			return mcp.NewToolResultText("done"), nil
		})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mcpHandler := server.NewStreamableHTTPServer(s)
	mux := http.NewServeMux()
	// Calls are recorded when their request arrives, before the MCP layer
	// parses them: the nearest point to when toolgate sent them.
	mux.HandleFunc("/mcp", func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		body, _ := io.ReadAll(r.Body)
		var msg struct {
			Method string `json:"method"`
			Params struct {
				Meta map[string]any `json:"_meta"`
			} `json:"params"`
		}
		if json.Unmarshal(body, &msg) == nil && msg.Method == "tools/call" {
			session, _ := msg.Params.Meta["io.toolgate/session"].(string)
			seq, _ := msg.Params.Meta["io.toolgate/call"].(float64)
			u.mu.Lock()
			u.calls[session] = append(u.calls[session], received{seq: int64(seq), at: now})
			u.mu.Unlock()
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		mcpHandler.ServeHTTP(w, r)
	})
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return u, "http://" + ln.Addr().String() + "/mcp"
}

func (u *countingUpstream) of(session string) []received {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.calls[session])
}

func raceTrials() int {
	if n, err := strconv.Atoi(os.Getenv("TOOLGATE_RACE_TRIALS")); err == nil && n > 0 {
		return n
	}
	return 50
}

// TestRevokeRaceAcrossReplicas: two gateway replicas share one Redis; 64
// goroutines call one session through both while a revoke commits at a
// random moment. No call the store did not admit before the revoke may
// reach the upstream; calls after the revoke are refused; a replica that
// had not yet heard of the revoke still refuses, because admitting reads
// the store. Set TOOLGATE_RACE_TRIALS for more trials (1,000 in CI).
func TestRevokeRaceAcrossReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("long")
	}
	srv := sessionstest.StartRedis(t)
	prefix := sessionstest.Prefix()
	revokeRace(t, func() sessions.Store {
		rc := redis.NewClient(&redis.Options{Addr: srv.Addr, PoolSize: 64})
		t.Cleanup(func() { _ = rc.Close() })
		return sessions.NewRedis(rc, sessions.RedisOptions{Prefix: prefix})
	})
}

// revokeRace runs the two-replica revoke race on stores made by newStore,
// which must share one Redis (standalone, Sentinel or Cluster).
func revokeRace(t *testing.T, newStore func() sessions.Store) {
	up, upURL := startCountingUpstream(t)
	stores := []sessions.Store{newStore(), newStore()}
	replicas := []*replica{
		startReplica(t, replicaOpts{store: stores[0], upstream: upURL}),
		startReplica(t, replicaOpts{store: stores[1], upstream: upURL}),
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128}}
	call := func(base, token string, id int) (int, string) {
		body := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"web__work","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"race","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}}}`, id)
		req, _ := http.NewRequest(http.MethodPost, base+"/mcp", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("MCP-Protocol-Version", mcp.ProtocolVersion20260728)
		req.Header.Set("Mcp-Method", "tools/call")
		req.Header.Set("Mcp-Name", "web__work")
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		var b strings.Builder
		buf := make([]byte, 4096)
		for {
			n, err := resp.Body.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
		return resp.StatusCode, b.String()
	}

	trials := raceTrials()
	var allowedTotal, refusedAfter, lateReceipts int
	var maxLate time.Duration
	for trial := 0; trial < trials; trial++ {
		token := mintToken(t, replicas[trial%2].url, "agent-1", sessionKeys["KEY1"], "")
		sess, err := stores[0].LookupToken(context.Background(), sessions.HashToken(token))
		if err != nil {
			t.Fatal(err)
		}
		var ack atomic.Int64 // unix ns when Revoke returned; 0 before
		var wg sync.WaitGroup
		var okAfterAck atomic.Int64
		for g := 0; g < 64; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 8; i++ {
					start := time.Now().UnixNano()
					status, body := call(replicas[(g+i)%2].url, token, g*100+i)
					if status == 200 && strings.Contains(body, `"done"`) {
						if a := ack.Load(); a != 0 && start > a {
							okAfterAck.Add(1)
						}
					}
				}
			}()
		}
		time.Sleep(time.Duration(rand.IntN(15_000)) * time.Microsecond)
		if _, err := stores[trial%2].Revoke(context.Background(), sess.ID, "race"); err != nil {
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
		for _, rcv := range up.of(sess.ID) {
			if !admitted[rcv.seq] {
				t.Fatalf("trial %d: the upstream received call %d, which the store never admitted", trial, rcv.seq)
			}
			if rcv.at.After(ackAt) {
				lateReceipts++
				maxLate = max(maxLate, rcv.at.Sub(ackAt))
			}
		}
		if n := okAfterAck.Load(); n != 0 {
			t.Fatalf("trial %d: %d calls started after the revoke was acknowledged and succeeded", trial, n)
		}
		if final.State != sessions.StateRevoked {
			t.Fatalf("trial %d: session %s; want revoked", trial, final.State)
		}
		allowedTotal += len(admitted)
		refusedAfter += int(final.Denied)
	}
	t.Logf("%d trials: %d calls admitted before revokes, %d upstream receipts later than the acknowledgement (at most %v later; sent before it), %d in-flight calls cancelled at the upstream",
		trials, allowedTotal, lateReceipts, maxLate, up.cancelled.Load())
}
