package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/toolgate/toolgate/internal/audit"
	"github.com/toolgate/toolgate/internal/faults"
	"github.com/toolgate/toolgate/sessions"
)

const (
	procAgentKey   = "process-agent-key"
	procAdminToken = "process-admin-token"
	procStream     = "toolgate-proc:audit"
)

// countingUpstream is a tool server with work (answers at once), hang (held
// until cancelled) and secret (outside the agents' scope: never called). It
// records when each call of each session arrived and when a hang was cancelled.
type countingUpstream struct {
	mu        sync.Mutex
	arrived   map[string][]time.Time
	cancelled map[string][]time.Time
}

func startCountingUpstream(t *testing.T) (*countingUpstream, string) {
	t.Helper()
	u := &countingUpstream{arrived: map[string][]time.Time{}, cancelled: map[string][]time.Time{}}
	note := func(req mcp.CallToolRequest) string {
		var id string
		if req.Params.Meta != nil {
			id, _ = req.Params.Meta.AdditionalFields["io.toolgate/session"].(string)
		}
		u.mu.Lock()
		u.arrived[id] = append(u.arrived[id], time.Now())
		u.mu.Unlock()
		return id
	}
	s := server.NewMCPServer("up", "1.0.0", server.WithToolCapabilities(false))
	s.AddTool(mcp.NewTool("work"), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		note(req)
		return mcp.NewToolResultText("done"), nil
	})
	s.AddTool(mcp.NewTool("secret"), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		note(req)
		return mcp.NewToolResultText("leaked"), nil
	})
	s.AddTool(mcp.NewTool("hang"), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		id := note(req)
		select {
		case <-ctx.Done():
			u.mu.Lock()
			u.cancelled[id] = append(u.cancelled[id], time.Now())
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
	srv := &http.Server{Handler: server.NewStreamableHTTPServer(s)}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return u, "http://" + ln.Addr().String() + "/mcp"
}

// replica is one `toolgate serve` process (this test binary run as toolgate).
type replica struct {
	mcp, admin string // base URLs
	cmd        *exec.Cmd
	log        *bytes.Buffer
}

func freeLoopback(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func hexSHA(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }

// startReplicas starts n toolgate serve processes on one Redis and one upstream.
func startReplicas(t *testing.T, n int, redisAddr, upstreamURL string) []*replica {
	t.Helper()
	var out []*replica
	for i := 0; i < n; i++ {
		listen, admin := freeLoopback(t), freeLoopback(t)
		cfg := fmt.Sprintf(`gateway:
  listen: %s
admin:
  listen: %s
  token_sha256: %s
identity:
  api_keys:
    - agent: proc-agent
      profile: default
      sha256: %s
profiles:
  default:
    lifetime: 1h
    tools: ["up__work", "up__hang"]
    budget: 1000000
store:
  type: redis
  redis:
    url: redis://%s
    prefix: toolgate-proc
audit:
  stream: %s
tools:
  separator: "__"
  servers:
    - name: up
      transport: streamable-http
      url: %s
log:
  level: warn
`, listen, admin, hexSHA(procAdminToken), hexSHA(procAgentKey), redisAddr, procStream, upstreamURL)
		path := filepath.Join(t.TempDir(), "toolgate.yaml")
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		r := &replica{mcp: "http://" + listen, admin: "http://" + admin, log: &bytes.Buffer{}}
		r.cmd = exec.Command(os.Args[0], "serve", "--config", path)
		r.cmd.Env = append(os.Environ(), runMainEnv+"=1")
		r.cmd.Stderr, r.cmd.Stdout = r.log, r.log
		if err := r.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = r.cmd.Process.Kill()
			_ = r.cmd.Wait()
			if t.Failed() {
				t.Logf("replica %d log:\n%s", i, r.log)
			}
		})
		out = append(out, r)
	}
	for i, r := range out {
		deadline := time.Now().Add(30 * time.Second)
		for {
			resp, err := http.Get(r.mcp + "/.well-known/oauth-authorization-server")
			if err == nil {
				resp.Body.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("replica %d not listening after 30s: %v\n%s", i, err, r.log)
			}
			time.Sleep(20 * time.Millisecond) // polling for the process to come up
		}
	}
	return out
}

// openSession gets a session token from replica r, and the session id.
func openSession(t *testing.T, r *replica) (token, id string) {
	t.Helper()
	req, _ := http.NewRequest("POST", r.mcp+"/oauth/token", strings.NewReader(url.Values{"grant_type": {"client_credentials"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("proc-agent", procAgentKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.AccessToken == "" {
		t.Fatalf("POST /oauth/token = %d, %v; want a token", resp.StatusCode, err)
	}
	return body.AccessToken, sessions.IDFromHash(sessions.HashToken(body.AccessToken))
}

// agentClient connects an MCP client to replica r with the session token.
func agentClient(t *testing.T, r *replica, token string) *client.Client {
	t.Helper()
	c, err := client.NewStreamableHttpClient(r.mcp+"/mcp", transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer " + token}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = mcp.LATEST_PROTOCOL_VERSION
	init.Params.ClientInfo = mcp.Implementation{Name: "proc-test", Version: "1"}
	if _, err := c.Initialize(ctx, init); err != nil {
		t.Fatalf("initialize on %s: %v", r.mcp, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// call calls tool and reports whether the agent was answered with a success.
func call(ctx context.Context, c *client.Client, tool string) (bool, error) {
	req := mcp.CallToolRequest{}
	req.Params.Name = tool
	res, err := c.CallTool(ctx, req)
	if err != nil {
		return false, err
	}
	return !res.IsError, nil
}

func adminRevoke(r *replica, id string) error {
	req, _ := http.NewRequest("POST", r.admin+"/v1/sessions/"+id+"/revoke", strings.NewReader(`{"reason":"process test"}`))
	req.Header.Set("Authorization", "Bearer "+procAdminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("revoke: %d %s", resp.StatusCode, b)
	}
	return nil
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

func p99(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[(len(d)*99)/100]
}

// TestProcessReplicasRevoke runs three toolgate serve processes on one
// Redis. In each trial a session's agents call through the three at random,
// each replica holds one hanging call of it, and the session is revoked
// through a random replica's admin API: no call started after the revoke
// was acknowledged may succeed, and the hanging calls must be cancelled at
// the upstream. TOOLGATE_PROCESS_TRIALS sets the trials (default 200).
func TestProcessReplicasRevoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts redis-server and three toolgate processes")
	}
	trials := envInt(t, "TOOLGATE_PROCESS_TRIALS", 200)
	rdb := faults.StartServer(t)
	up, upURL := startCountingUpstream(t)
	reps := startReplicas(t, 3, rdb.Addr, upURL)

	var admitted, afterAck, lateReceipts, hangs int
	var cancelLag []time.Duration
	for trial := 0; trial < trials; trial++ {
		token, id := openSession(t, reps[rand.IntN(3)])
		clients := make([]*client.Client, 3)
		for i, r := range reps {
			clients[i] = agentClient(t, r, token)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		var wg sync.WaitGroup
		for _, c := range clients {
			wg.Add(1)
			go func() { defer wg.Done(); _, _ = call(ctx, c, "up__hang") }()
		}
		// Wait until the three hanging calls have reached the upstream.
		deadline := time.Now().Add(10 * time.Second)
		for {
			up.mu.Lock()
			n := len(up.arrived[id])
			up.mu.Unlock()
			if n >= 3 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("trial %d: %d of 3 hanging calls reached the upstream", trial, n)
			}
			time.Sleep(time.Millisecond) // polling for calls in flight
		}
		var ackAt atomic.Int64 // unix ns of the acknowledgement; 0 before it
		var nAdmitted, nAfter atomic.Int64
		stop := make(chan struct{})
		for a := 0; a < 3; a++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					started := time.Now().UnixNano()
					ok, _ := call(ctx, clients[rand.IntN(3)], "up__work")
					if ok {
						nAdmitted.Add(1)
						if ack := ackAt.Load(); ack != 0 && started > ack {
							nAfter.Add(1)
						}
					}
				}
			}()
		}
		// Revoke after a random number (0-4) of calls has been admitted.
		for want := int64(rand.IntN(5)); nAdmitted.Load() < want && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond) // polling for calls admitted
		}
		if err := adminRevoke(reps[rand.IntN(3)], id); err != nil {
			t.Fatalf("trial %d: %v", trial, err)
		}
		ack := time.Now()
		ackAt.Store(ack.UnixNano())
		// A few calls after the acknowledgement on every replica, then stop.
		for _, c := range clients {
			if ok, _ := call(ctx, c, "up__work"); ok {
				nAfter.Add(1)
			}
		}
		close(stop)
		wg.Wait()
		cancel()
		admitted += int(nAdmitted.Load())
		afterAck += int(nAfter.Load())
		up.mu.Lock()
		for _, at := range up.arrived[id] {
			if at.After(ack) {
				lateReceipts++
			}
		}
		for _, at := range up.cancelled[id] {
			cancelLag = append(cancelLag, at.Sub(ack))
		}
		hangs += 3
		up.mu.Unlock()
	}
	if afterAck != 0 {
		t.Errorf("%d calls started after an acknowledged revoke succeeded; want 0", afterAck)
	}
	if len(cancelLag) != hangs {
		t.Errorf("%d of %d hanging calls cancelled at the upstream; want all", len(cancelLag), hangs)
	}
	t.Logf("%d trials over 3 processes: %d calls admitted, %d succeeded after the acknowledgement, %d upstream receipts later than it, in-flight cancelled p99 %v (max %v) after it",
		trials, admitted, afterAck, lateReceipts, p99(cancelLag), slices.Max(append(cancelLag, -time.Hour)))
}

// TestProcessReplicaKilled kills one of three toolgate serve processes with
// SIGKILL while it holds a call of a session in flight and answers denials
// of that session as fast as it can. Expected: the call in flight fails
// for the agent; every denial and the revoke that agents or operators were
// answered is in the audit stream (they are written before the answer);
// the session goes on through the other two replicas, and their revoke ends it.
func TestProcessReplicaKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("starts redis-server and three toolgate processes")
	}
	rdb := faults.StartServer(t)
	up, upURL := startCountingUpstream(t)
	reps := startReplicas(t, 3, rdb.Addr, upURL)
	token, id := openSession(t, reps[0])
	clients := make([]*client.Client, 3)
	for i, r := range reps {
		clients[i] = agentClient(t, r, token)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	hangErr := make(chan error, 1)
	go func() { _, err := call(ctx, clients[1], "up__hang"); hangErr <- err }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		up.mu.Lock()
		n := len(up.arrived[id])
		up.mu.Unlock()
		if n >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the hanging call did not reach the upstream")
		}
		time.Sleep(time.Millisecond) // polling for the call in flight
	}
	// Denials through every replica, the victim included, until it dies.
	var denied atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ok, err := call(ctx, clients[i], "up__secret")
				if ok {
					t.Errorf("call of up__secret (out of scope) through replica %d succeeded; want denied", i)
				}
				if i == 1 && err != nil && !strings.Contains(err.Error(), "scope") && !strings.Contains(err.Error(), "denied") {
					return // the victim is gone: the transport failed, nothing was answered
				}
				denied.Add(1)
			}
		}()
	}
	for denied.Load() < 30 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // polling until denials are under way
	}
	if err := reps[1].cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	_ = reps[1].cmd.Wait()
	if err := <-hangErr; err == nil {
		t.Errorf("hanging call through the killed replica = nil error; want a failure")
	}
	close(stop)
	wg.Wait()
	for _, i := range []int{0, 2} {
		if ok, err := call(ctx, clients[i], "up__work"); !ok {
			t.Errorf("call through replica %d after the kill = %v, %v; want success (the session lives in Redis)", i, ok, err)
		}
	}
	if err := adminRevoke(reps[2], id); err != nil {
		t.Fatal(err)
	}
	if ok, _ := call(ctx, clients[0], "up__work"); ok {
		t.Errorf("call after the revoke through replica 0 succeeded; want refused")
	}

	var denials, revokes int
	err := audit.TailRedis(ctx, rdb.Client(), procStream, "0", false, func(e audit.Entry) error {
		if e.Event.Session != id {
			return nil
		}
		switch {
		case e.Event.Kind == audit.KindDecision && e.Event.Decision != "allow":
			denials++
		case e.Event.Kind == audit.KindRevoke:
			revokes++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if int64(denials) < denied.Load() || revokes != 1 {
		t.Errorf("audit stream after kill -9: %d denials, %d revokes; want at least the %d denials answered and 1 revoke", denials, revokes, denied.Load())
	}
	t.Logf("kill -9 mid-call: %d denials answered, %d in the audit stream (the difference: decided and audited, answer lost with the process), %d revoke", denied.Load(), denials, revokes)
}
