package config

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/toolgate/toolgate/sessions"
)

// Store says where sessions live.
type Store struct {
	// Type is memory (one process, the default) or redis (shared by
	// every replica).
	Type  string     `yaml:"type"`
	Redis RedisStore `yaml:"redis"`
}

// RedisStore locates Redis, in one of three deployments:
//
//   - standalone: url redis://[user:pass@]host:port[/db], or addrs with one address;
//   - Sentinel: master_name with the sentinels in addrs, or in the url as
//     redis://sentinel1:26379?master_name=NAME&addr=sentinel2:26379;
//   - Cluster: two or more addrs (any nodes; the rest are discovered), or
//     cluster: true with one, or the url redis://node1:6379?addr=node2:6379
//     (or ?cluster=true with one node).
type RedisStore struct {
	URL         string        `yaml:"url"`          // see above
	Addrs       []string      `yaml:"addrs"`        // cluster nodes or sentinels
	MasterName  string        `yaml:"master_name"`  // Sentinel
	Cluster     bool          `yaml:"cluster"`      // one address that is a cluster node
	PasswordEnv string        `yaml:"password_env"` // variable holding the password
	Prefix      string        `yaml:"prefix"`       // key prefix; default "toolgate"
	Timeout     time.Duration `yaml:"timeout"`      // per command; default 500ms
	// WaitReplicas makes each revoke and freeze wait until that many Redis replicas hold it
	// (WAIT), so that a Sentinel failover cannot undo it; a wait that times out is an
	// error to the revoker. Standalone or Sentinel only. Zero: no wait.
	WaitReplicas int           `yaml:"wait_replicas"`
	WaitTimeout  time.Duration `yaml:"wait_timeout"` // bounds that wait; default 100ms, below timeout
}

// DefaultRedisTimeout bounds each Redis command when store.redis.timeout is
// not set: a call waits at most about this long (times MaxRetries+1) for a
// slow store before it is refused.
const DefaultRedisTimeout = 500 * time.Millisecond

// Buffers of each Redis connection. go-redis defaults to 32 KiB each way,
// and 128 KiB for the connections of its pipeline pool: several MiB for
// the pools of one process, while toolgate's commands and replies are a
// few hundred bytes (a longer reply is read through the buffer in parts).
const (
	redisBufferSize         = 8 << 10
	redisPipelineBufferSize = 16 << 10
)

// bufferSizes sets the connection buffers of opts.
func bufferSizes(opts *redis.UniversalOptions) {
	opts.ReadBufferSize, opts.WriteBufferSize = redisBufferSize, redisBufferSize
	opts.PipelineReadBufferSize, opts.PipelineWriteBufferSize = redisPipelineBufferSize, redisPipelineBufferSize
}

func (s *Store) validate() error {
	switch s.Type {
	case "":
		s.Type = "memory"
	case "memory":
	case "redis":
		if _, err := s.Redis.Options(); err != nil {
			return err
		}
	default:
		return fmt.Errorf("store.type: %q is not memory or redis", s.Type)
	}
	return nil
}

// Validate reports the first problem with the Redis location, phrased as what to change.
func (r RedisStore) Validate() error {
	_, err := r.Options()
	return err
}

// Options turns the configuration into go-redis universal options: which
// client NewUniversalClient makes follows from them (a Sentinel
// master name, several addresses or IsClusterMode, else one server). The
// password is not filled in; Open reads it from password_env.
func (r RedisStore) Options() (*redis.UniversalOptions, error) {
	if (r.URL == "") == (len(r.Addrs) == 0) {
		return nil, errors.New("store.redis: give url, or addrs (with master_name for Sentinel), not both")
	}
	if r.Timeout < 0 {
		return nil, fmt.Errorf("store.redis.timeout: %v must be positive, or 0 for %v", r.Timeout, DefaultRedisTimeout)
	}
	timeout := r.Timeout
	if timeout == 0 {
		timeout = DefaultRedisTimeout
	}
	opts := &redis.UniversalOptions{Addrs: r.Addrs, MasterName: r.MasterName, IsClusterMode: r.Cluster,
		ReadTimeout: timeout, WriteTimeout: timeout, DialTimeout: timeout}
	bufferSizes(opts)
	if r.URL != "" {
		if r.MasterName != "" || r.Cluster {
			return nil, errors.New("store.redis: with url, give master_name and cluster in the url (?master_name=NAME, ?cluster=true), not as fields")
		}
		if err := fromURL(r.URL, opts); err != nil {
			return nil, fmt.Errorf("store.redis.url: %w", err)
		}
	}
	for i, a := range opts.Addrs {
		if _, port, err := splitAddr(a); err != nil {
			return nil, fmt.Errorf("store.redis.addrs[%d]: %q: %v: write host:port", i, a, err)
		} else if port == "" {
			return nil, fmt.Errorf("store.redis.addrs[%d]: %q has no port: write host:port", i, a)
		}
	}
	if opts.MasterName != "" && opts.IsClusterMode {
		return nil, errors.New("store.redis: master_name (Sentinel) and cluster exclude each other: keep one")
	}
	if err := r.validateWait(opts); err != nil {
		return nil, err
	}
	return opts, nil
}

// validateWait checks wait_replicas and wait_timeout against the deployment opts describe.
func (r RedisStore) validateWait(opts *redis.UniversalOptions) error {
	switch {
	case r.WaitReplicas < 0:
		return fmt.Errorf("store.redis.wait_replicas: %d is negative: give the number of replicas a revoke must reach, or 0", r.WaitReplicas)
	case r.WaitTimeout < 0:
		return fmt.Errorf("store.redis.wait_timeout: %v must be positive, or 0 for %v", r.WaitTimeout, sessions.DefaultWaitTimeout)
	case r.WaitReplicas == 0:
		if r.WaitTimeout != 0 {
			return errors.New("store.redis.wait_timeout: set wait_replicas too, or remove wait_timeout")
		}
		return nil
	case opts.IsClusterMode || (opts.MasterName == "" && len(opts.Addrs) > 1):
		return errors.New("store.redis.wait_replicas: not supported on Redis Cluster (WAIT counts one node's replicas): remove it")
	}
	wait := r.WaitTimeout
	if wait == 0 {
		wait = sessions.DefaultWaitTimeout
	}
	if wait >= opts.ReadTimeout {
		return fmt.Errorf("store.redis.wait_timeout: %v must be below the command timeout %v (the WAIT reply is read with it): lower it or raise timeout", wait, opts.ReadTimeout)
	}
	return nil
}

func splitAddr(a string) (host, port string, err error) {
	u, err := url.Parse("redis://" + a)
	if err != nil {
		return "", "", err
	}
	if u.Path != "" || u.RawQuery != "" || u.User != nil {
		return "", "", errors.New("not a bare address")
	}
	return u.Hostname(), u.Port(), nil
}

// fromURL reads a redis:// or rediss:// URL into opts: the first address
// from the host, more from repeated addr parameters, master_name for
// Sentinel and cluster=true for a single cluster node. The rest of the
// query (timeouts, pool sizes) is go-redis's own URL syntax.
func fromURL(raw string, opts *redis.UniversalOptions) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return fmt.Errorf("scheme %q: use redis:// or rediss://", u.Scheme)
	}
	q := u.Query()
	cluster := false
	if v := q.Get("cluster"); v != "" {
		if cluster, err = strconv.ParseBool(v); err != nil {
			return fmt.Errorf("cluster=%q: write cluster=true or leave it out", v)
		}
		q.Del("cluster")
		u.RawQuery = q.Encode()
	}
	switch {
	case q.Get("master_name") != "":
		if cluster {
			return errors.New("master_name (Sentinel) and cluster=true exclude each other: keep one")
		}
		o, err := redis.ParseFailoverURL(u.String())
		if err != nil {
			return err
		}
		timeouts(opts, o.DialTimeout, o.ReadTimeout, o.WriteTimeout)
		opts.MasterName, opts.Addrs = o.MasterName, o.SentinelAddrs
		opts.Username, opts.Password, opts.DB, opts.TLSConfig = o.Username, o.Password, o.DB, o.TLSConfig
		// The URL's user info authenticates to the sentinels; ?password= to the master.
		opts.SentinelUsername, opts.SentinelPassword = o.SentinelUsername, o.SentinelPassword
	case len(q["addr"]) > 0 || cluster:
		if u.Path != "" && u.Path != "/" && u.Path != "/0" {
			return fmt.Errorf("path %q: Redis Cluster has only database 0", u.Path)
		}
		u.Path = ""
		o, err := redis.ParseClusterURL(u.String())
		if err != nil {
			return err
		}
		timeouts(opts, o.DialTimeout, o.ReadTimeout, o.WriteTimeout)
		opts.Addrs, opts.IsClusterMode = o.Addrs, true
		opts.Username, opts.Password, opts.TLSConfig = o.Username, o.Password, o.TLSConfig
	default:
		o, err := redis.ParseURL(u.String())
		if err != nil {
			return err
		}
		timeouts(opts, o.DialTimeout, o.ReadTimeout, o.WriteTimeout)
		opts.Addrs = []string{o.Addr}
		opts.Username, opts.Password, opts.DB, opts.TLSConfig = o.Username, o.Password, o.DB, o.TLSConfig
	}
	return nil
}

// timeouts lets timeouts given in the URL win over store.redis.timeout.
func timeouts(opts *redis.UniversalOptions, dial, read, write time.Duration) {
	if dial > 0 {
		opts.DialTimeout = dial
	}
	if read > 0 {
		opts.ReadTimeout = read
	}
	if write > 0 {
		opts.WriteTimeout = write
	}
}

// Open connects the configured store. close releases it.
func (s Store) Open(ctx context.Context, clock sessions.Clock, lookupEnv func(string) (string, bool)) (store sessions.Store, close func() error, err error) {
	if lookupEnv == nil {
		lookupEnv = os.LookupEnv
	}
	if s.Type != "redis" {
		return sessions.NewMemory(sessions.Options{Clock: clock}), func() error { return nil }, nil
	}
	opts, err := s.Redis.Options()
	if err != nil {
		return nil, nil, err
	}
	if r := s.Redis; r.PasswordEnv != "" {
		v, ok := lookupEnv(r.PasswordEnv)
		if !ok {
			return nil, nil, fmt.Errorf("store.redis.password_env: %s is not set", r.PasswordEnv)
		}
		opts.Password = v
	}
	client := redis.NewUniversalClient(opts)
	return sessions.NewRedis(client, sessions.RedisOptions{Options: sessions.Options{Clock: clock}, Prefix: s.Redis.Prefix,
		Wait: sessions.WaitOptions{Replicas: s.Redis.WaitReplicas, Timeout: s.Redis.WaitTimeout}}), client.Close, nil
}
