package config

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/toolgate/toolgate/internal/faults"
	"github.com/toolgate/toolgate/sessions"
	"github.com/toolgate/toolgate/sessions/sessionstest"
)

func TestRedisStoreOptions(t *testing.T) {
	tests := []struct {
		name    string
		in      RedisStore
		client  string // standalone, sentinel, cluster
		addrs   string
		master  string
		db      int
		timeout time.Duration
		err     string
	}{
		{"url", RedisStore{URL: "redis://h:6379/2"}, "standalone", "h:6379", "", 2, DefaultRedisTimeout, ""},
		{"url password", RedisStore{URL: "redis://u:p@h:6379"}, "standalone", "h:6379", "", 0, DefaultRedisTimeout, ""},
		{"url timeout wins", RedisStore{URL: "redis://h:6379?read_timeout=2s", Timeout: time.Second}, "standalone", "h:6379", "", 0, 2 * time.Second, ""},
		{"one addr", RedisStore{Addrs: []string{"h:6379"}}, "standalone", "h:6379", "", 0, DefaultRedisTimeout, ""},
		{"cluster addrs", RedisStore{Addrs: []string{"a:7000", "b:7001"}}, "cluster", "a:7000,b:7001", "", 0, DefaultRedisTimeout, ""},
		{"cluster one addr", RedisStore{Addrs: []string{"a:7000"}, Cluster: true}, "cluster", "a:7000", "", 0, DefaultRedisTimeout, ""},
		{"cluster url", RedisStore{URL: "redis://a:7000?addr=b:7001&addr=c:7002"}, "cluster", "a:7000,b:7001,c:7002", "", 0, DefaultRedisTimeout, ""},
		{"cluster url one node", RedisStore{URL: "redis://a:7000?cluster=true"}, "cluster", "a:7000", "", 0, DefaultRedisTimeout, ""},
		{"sentinel addrs", RedisStore{Addrs: []string{"s1:26379", "s2:26379"}, MasterName: "m"}, "sentinel", "s1:26379,s2:26379", "m", 0, DefaultRedisTimeout, ""},
		{"sentinel url", RedisStore{URL: "redis://s1:26379/1?master_name=m&addr=s2:26379"}, "sentinel", "s1:26379,s2:26379", "m", 1, DefaultRedisTimeout, ""},
		{"neither", RedisStore{}, "", "", "", 0, 0, "give url, or addrs"},
		{"both", RedisStore{URL: "redis://h:1", Addrs: []string{"h:1"}}, "", "", "", 0, 0, "give url, or addrs"},
		{"bad scheme", RedisStore{URL: "http://h:1"}, "", "", "", 0, 0, "use redis:// or rediss://"},
		{"bad cluster flag", RedisStore{URL: "redis://h:1?cluster=maybe"}, "", "", "", 0, 0, "write cluster=true"},
		{"cluster db", RedisStore{URL: "redis://h:1/3?addr=h:2"}, "", "", "", 0, 0, "only database 0"},
		{"sentinel and cluster", RedisStore{Addrs: []string{"h:1"}, MasterName: "m", Cluster: true}, "", "", "", 0, 0, "exclude each other"},
		{"url with field", RedisStore{URL: "redis://h:1", MasterName: "m"}, "", "", "", 0, 0, "give master_name and cluster in the url"},
		{"addr without port", RedisStore{Addrs: []string{"h"}}, "", "", "", 0, 0, "has no port"},
		{"unknown url option", RedisStore{URL: "redis://h:1?colour=red"}, "", "", "", 0, 0, "colour"},
		{"negative timeout", RedisStore{URL: "redis://h:1", Timeout: -time.Second}, "", "", "", 0, 0, "must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := tt.in.Options()
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Options(%+v) error = %v; want one containing %q", tt.in, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Options(%+v) error: %v", tt.in, err)
			}
			c := redis.NewUniversalClient(o)
			defer c.Close()
			kind := map[string]string{"*redis.Client": "standalone", "*redis.ClusterClient": "cluster"}[fmt.Sprintf("%T", c)]
			if o.MasterName != "" {
				kind = "sentinel"
			}
			if kind != tt.client {
				t.Errorf("Options(%+v) makes a %T (%s); want %s", tt.in, c, kind, tt.client)
			}
			if got := strings.Join(o.Addrs, ","); got != tt.addrs {
				t.Errorf("Options(%+v).Addrs = %s; want %s", tt.in, got, tt.addrs)
			}
			if o.MasterName != tt.master || o.DB != tt.db {
				t.Errorf("Options(%+v) master %q db %d; want %q %d", tt.in, o.MasterName, o.DB, tt.master, tt.db)
			}
			if o.ReadTimeout != tt.timeout {
				t.Errorf("Options(%+v).ReadTimeout = %v; want %v", tt.in, o.ReadTimeout, tt.timeout)
			}
		})
	}
}

// TestStoreOpenDeployments opens the store from configuration against a
// real standalone server, a real three-master Cluster and a real Sentinel
// group, and runs a session through each.
func TestStoreOpenDeployments(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Redis Cluster and Sentinel")
	}
	single := sessionstest.StartRedis(t)
	cluster := faults.StartCluster(t, 3)
	sent := faults.StartSentinel(t)
	addrs := cluster.Addrs()
	tests := []struct {
		name string
		r    RedisStore
	}{
		{"standalone url", RedisStore{URL: "redis://" + single.Addr + "/0"}},
		{"cluster addrs", RedisStore{Addrs: addrs}},
		{"cluster one addr", RedisStore{Addrs: addrs[:1], Cluster: true}},
		{"cluster url", RedisStore{URL: "redis://" + addrs[0] + "?addr=" + addrs[1] + "&addr=" + addrs[2]}},
		{"sentinel addrs", RedisStore{Addrs: []string{sent.Sentinel.Addr}, MasterName: sent.Name}},
		{"sentinel url", RedisStore{URL: "redis://" + sent.Sentinel.Addr + "?master_name=" + sent.Name}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			tt.r.Prefix = sessionstest.Prefix()
			cfg := Store{Type: "redis", Redis: tt.r}
			if err := cfg.validate(); err != nil {
				t.Fatalf("validate(%+v): %v", tt.r, err)
			}
			st, closeStore, err := cfg.Open(ctx, nil, nil)
			if err != nil {
				t.Fatalf("Open(%+v): %v", tt.r, err)
			}
			defer closeStore()
			events, err := st.Subscribe(ctx)
			if err != nil {
				t.Fatalf("Subscribe: %v", err)
			}
			s, _, err := st.Create(ctx, sessions.Spec{Agent: "a", Scope: []string{"*"}, Lifetime: time.Hour})
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			if _, err := st.Revoke(ctx, s.ID, "test"); err != nil {
				t.Fatalf("Revoke: %v", err)
			}
			if _, err := st.Snapshot(ctx, s.ID); err == nil {
				t.Fatalf("Snapshot after Revoke = nil error; want the session refused")
			}
			select {
			case ev := <-events:
				if ev.SessionID != s.ID || ev.Kind != sessions.EventRevoked {
					t.Fatalf("event %+v; want revoked %s", ev, s.ID)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no revoked event within 5s")
			}
		})
	}
}
