// Package faults starts the real pieces that toolgate's reliability tests
// run on and break: Redis Cluster and Sentinel groups, a proxy that slows or
// cuts the path to a server, and child processes to kill.
package faults

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Node is one redis-server process started for a test.
type Node struct {
	Addr string
	Port int

	tb   testing.TB
	args []string
	mu   sync.Mutex
	cmd  *exec.Cmd
}

// needRedis skips the test when the redis-server binary is missing.
func needRedis(tb testing.TB, bins ...string) {
	tb.Helper()
	for _, b := range append([]string{"redis-server"}, bins...) {
		if _, err := exec.LookPath(b); err != nil {
			tb.Skipf("%s not installed", b)
		}
	}
}

// freePort finds a port on 127.0.0.1 that is free, and whose cluster bus
// port (port + 10000) is free too.
func freePort(tb testing.TB) int {
	tb.Helper()
	for i := 0; i < 200; i++ {
		p := 20000 + rand.IntN(25000)
		a, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		b, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+10000))
		_ = a.Close()
		if err != nil {
			continue
		}
		_ = b.Close()
		return p
	}
	tb.Fatal("no free port pair for redis-server")
	return 0
}

// startNode starts redis-server with args added to a no-persistence base
// in its own directory, and kills it when the test ends.
func startNode(tb testing.TB, dir string, args ...string) *Node {
	tb.Helper()
	port := freePort(tb)
	n := &Node{Addr: "127.0.0.1:" + strconv.Itoa(port), Port: port, tb: tb}
	n.args = append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--loglevel", "warning"}, args...)
	n.Start()
	tb.Cleanup(n.Kill)
	return n
}

// Start (re)starts the node and waits until it answers PING.
func (n *Node) Start() {
	n.tb.Helper()
	n.mu.Lock()
	if n.cmd != nil {
		n.mu.Unlock()
		return
	}
	cmd := exec.Command("redis-server", n.args...)
	if err := cmd.Start(); err != nil {
		n.mu.Unlock()
		n.tb.Fatalf("start redis-server %s: %v", n.Addr, err)
	}
	n.cmd = cmd
	n.mu.Unlock()
	waitFor(n.tb, 10*time.Second, "redis-server "+n.Addr+" answers PING", func() error {
		c := redis.NewClient(&redis.Options{Addr: n.Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
		defer c.Close()
		return c.Ping(context.Background()).Err()
	})
}

// Kill ends the node with SIGKILL and waits for it to exit.
func (n *Node) Kill() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Kill()
	_ = n.cmd.Wait()
	n.cmd = nil
}

// StartServer starts one standalone redis-server (no persistence unless
// args ask for it) in a directory of its own, killed when the test ends.
// Its data directory survives Kill and Start, so with --appendonly yes a
// restarted server has its data back.
func StartServer(tb testing.TB, args ...string) *Node {
	tb.Helper()
	needRedis(tb)
	return startNode(tb, tb.TempDir(), args...)
}

// Client returns a plain client of this node, closed when the test ends.
func (n *Node) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: n.Addr})
	n.tb.Cleanup(func() { _ = c.Close() })
	return c
}

// waitFor polls check until it returns nil or the deadline passes. It
// waits for processes and clusters to settle, never for time itself.
func waitFor(tb testing.TB, limit time.Duration, what string, check func() error) {
	tb.Helper()
	deadline := time.Now().Add(limit)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("waiting until %s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Cluster is a Redis Cluster of masters only, on local ports.
type Cluster struct {
	Nodes []*Node
}

// Addrs lists the nodes' addresses, the seed list a cluster client takes.
func (c *Cluster) Addrs() []string {
	var out []string
	for _, n := range c.Nodes {
		out = append(out, n.Addr)
	}
	return out
}

// Client returns a cluster client on the nodes, closed when the test ends.
func (c *Cluster) Client(tb testing.TB, poolSize int) *redis.ClusterClient {
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), PoolSize: poolSize})
	tb.Cleanup(func() { _ = cc.Close() })
	return cc
}

// StartCluster starts masters redis-server processes in cluster mode, joins
// them with `redis-cli --cluster create` (the slots split evenly) and waits
// until every node reports cluster_state:ok. It skips the test when
// redis-server or redis-cli is missing.
func StartCluster(tb testing.TB, masters int) *Cluster {
	tb.Helper()
	needRedis(tb, "redis-cli")
	c := &Cluster{}
	for i := 0; i < masters; i++ {
		dir := tb.TempDir()
		c.Nodes = append(c.Nodes, startNode(tb, dir, "--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(dir, "nodes.conf"), "--cluster-node-timeout", "2000"))
	}
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		tb.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, n := range c.Nodes {
		cl := n.Client()
		waitFor(tb, 20*time.Second, "node "+n.Addr+" reports cluster_state:ok", func() error {
			info, err := cl.ClusterInfo(context.Background()).Result()
			if err != nil {
				return err
			}
			if !strings.Contains(info, "cluster_state:ok") {
				return fmt.Errorf("cluster info: %s", firstLine(info))
			}
			return nil
		})
	}
	return c
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return strings.TrimSpace(line)
}

// Sentinel is a master, one replica and one sentinel watching them.
type Sentinel struct {
	Master, Replica, Sentinel *Node
	// Name is the master name the sentinel knows it by.
	Name string
	// Link is the proxy the replica reaches the master through, when
	// StartLaggedSentinel started the group; nil otherwise.
	Link *Proxy
}

// StartSentinel starts a master, a replica of it and a sentinel (quorum 1,
// down-after 500 ms, so that a killed master fails over in about a second),
// and waits until the sentinel has found the replica.
func StartSentinel(tb testing.TB) *Sentinel {
	tb.Helper()
	return startSentinel(tb, -1)
}

// StartLaggedSentinel is StartSentinel with the replica linked to the master
// through a Proxy that delays every packet by lag, so that replication runs
// behind the master as it does across a slow network: a write the master
// acknowledged and then loses with the master is not yet on the replica.
func StartLaggedSentinel(tb testing.TB, lag time.Duration) *Sentinel {
	tb.Helper()
	return startSentinel(tb, lag)
}

func startSentinel(tb testing.TB, lag time.Duration) *Sentinel {
	tb.Helper()
	needRedis(tb)
	s := &Sentinel{Name: "toolgate-test"}
	s.Master = startNode(tb, tb.TempDir())
	upstream := s.Master.Port
	if lag >= 0 {
		s.Link = StartProxy(tb, s.Master.Addr)
		s.Link.SetDelay(lag)
		_, p, _ := net.SplitHostPort(s.Link.Addr)
		upstream, _ = strconv.Atoi(p)
	}
	s.Replica = startNode(tb, tb.TempDir(), "--replicaof", "127.0.0.1", strconv.Itoa(upstream))
	dir := tb.TempDir()
	conf := filepath.Join(dir, "sentinel.conf")
	body := fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d 1\nsentinel down-after-milliseconds %[1]s 500\nsentinel failover-timeout %[1]s 5000\nsentinel parallel-syncs %[1]s 1\n",
		s.Name, s.Master.Port)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		tb.Fatal(err)
	}
	port := freePort(tb)
	s.Sentinel = &Node{Addr: "127.0.0.1:" + strconv.Itoa(port), Port: port, tb: tb,
		args: []string{conf, "--sentinel", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir, "--loglevel", "warning"}}
	s.Sentinel.Start()
	tb.Cleanup(s.Sentinel.Kill)
	sc := redis.NewSentinelClient(&redis.Options{Addr: s.Sentinel.Addr})
	defer sc.Close()
	waitFor(tb, 20*time.Second, "the sentinel sees the replica in sync", func() error {
		reps, err := sc.Replicas(context.Background(), s.Name).Result()
		if err != nil {
			return err
		}
		if len(reps) == 0 {
			return fmt.Errorf("no replica known yet")
		}
		info, err := s.Master.Client().Info(context.Background(), "replication").Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "connected_slaves:1") || !strings.Contains(info, "state=online") {
			return fmt.Errorf("master: %s", strings.ReplaceAll(info, "\r\n", " "))
		}
		return nil
	})
	return s
}

// MasterAddr asks the sentinel which node is the master now.
func (s *Sentinel) MasterAddr(ctx context.Context) (string, error) {
	sc := redis.NewSentinelClient(&redis.Options{Addr: s.Sentinel.Addr})
	defer sc.Close()
	a, err := sc.GetMasterAddrByName(ctx, s.Name).Result()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(a[0], a[1]), nil
}

// WaitReplicated blocks until the replica has every write the master
// acknowledged so far (WAIT 1).
func (s *Sentinel) WaitReplicated(tb testing.TB, master *redis.Client) {
	tb.Helper()
	n, err := master.Wait(context.Background(), 1, 5*time.Second).Result()
	if err != nil || n < 1 {
		tb.Fatalf("WAIT 1: %d replicas, %v", n, err)
	}
}
