package sessionstest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisServer is a redis-server for one test.
type RedisServer struct {
	// Addr is host:port.
	Addr string
	// Own is false when the server came from TOOLGATE_TEST_REDIS: Stop and Start then skip.
	Own bool

	tb  testing.TB
	mu  sync.Mutex
	cmd *exec.Cmd
}

// StartRedis returns the server named by env TOOLGATE_TEST_REDIS, or starts a real
// redis-server on a free port (no persistence) that is killed when the test ends. It skips the
// test if no redis-server binary is installed.
func StartRedis(tb testing.TB) *RedisServer {
	tb.Helper()
	if addr := os.Getenv("TOOLGATE_TEST_REDIS"); addr != "" {
		return &RedisServer{Addr: addr, tb: tb}
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		tb.Skip("redis-server not installed; set TOOLGATE_TEST_REDIS to use a running server")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("find a free port: %v", err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	s := &RedisServer{Addr: addr, Own: true, tb: tb}
	s.Start()
	tb.Cleanup(s.Stop)
	return s
}

// Start (re)starts the server on its port and waits until it answers PING.
func (s *RedisServer) Start() {
	s.tb.Helper()
	if !s.Own {
		s.tb.Skip("cannot restart the server from TOOLGATE_TEST_REDIS")
	}
	_, port, _ := net.SplitHostPort(s.Addr)
	s.mu.Lock()
	if s.cmd != nil {
		s.mu.Unlock()
		return
	}
	cmd := exec.Command("redis-server", "--port", port, "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--loglevel", "warning")
	if err := cmd.Start(); err != nil {
		s.mu.Unlock()
		s.tb.Fatalf("start redis-server: %v", err)
	}
	s.cmd = cmd
	s.mu.Unlock()

	c := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.tb.Fatalf("redis-server on %s did not answer: %v", s.Addr, err)
		}
		time.Sleep(10 * time.Millisecond) // polling for a process to come up, not waiting for time
	}
}

// Stop kills the server and waits for it to exit.
func (s *RedisServer) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Client returns a client on the server, closed when the test ends.
func (s *RedisServer) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	s.tb.Cleanup(func() { _ = c.Close() })
	return c
}

var prefixSeq struct {
	sync.Mutex
	n int
}

// Prefix returns a key prefix no other store of this process uses, so stores of parallel tests
// can share one server.
func Prefix() string {
	prefixSeq.Lock()
	defer prefixSeq.Unlock()
	prefixSeq.n++
	return fmt.Sprintf("tgtest%d-%s", os.Getpid(), strconv.Itoa(prefixSeq.n))
}
