package config

import (
	"context"
	"errors"
	"fmt"
	"os"
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

// RedisStore locates Redis: one URL, or a list of addresses (Cluster), or
// a Sentinel master name with its sentinels' addresses.
type RedisStore struct {
	URL         string        `yaml:"url"`          // redis://[user@]host:port/db
	Addrs       []string      `yaml:"addrs"`        // cluster nodes or sentinels
	MasterName  string        `yaml:"master_name"`  // Sentinel
	PasswordEnv string        `yaml:"password_env"` // variable holding the password
	Prefix      string        `yaml:"prefix"`       // key prefix; default "toolgate"
	Timeout     time.Duration `yaml:"timeout"`      // per command; default 500ms
}

func (s *Store) validate() error {
	switch s.Type {
	case "":
		s.Type = "memory"
	case "memory":
	case "redis":
		r := s.Redis
		if (r.URL == "") == (len(r.Addrs) == 0) {
			return errors.New("store.redis: give url, or addrs (with master_name for Sentinel)")
		}
		if r.URL != "" {
			if _, err := redis.ParseURL(r.URL); err != nil {
				return fmt.Errorf("store.redis.url: %v", err)
			}
		}
		if r.Timeout < 0 {
			return fmt.Errorf("store.redis.timeout: %v must be positive", r.Timeout)
		}
	default:
		return fmt.Errorf("store.type: %q is not memory or redis", s.Type)
	}
	return nil
}

// Open connects the configured store. close releases it.
func (s Store) Open(ctx context.Context, clock sessions.Clock, lookupEnv func(string) (string, bool)) (store sessions.Store, close func() error, err error) {
	if lookupEnv == nil {
		lookupEnv = os.LookupEnv
	}
	if s.Type != "redis" {
		return sessions.NewMemory(sessions.Options{Clock: clock}), func() error { return nil }, nil
	}
	r := s.Redis
	timeout := r.Timeout
	if timeout == 0 {
		timeout = 500 * time.Millisecond
	}
	opts := &redis.UniversalOptions{Addrs: r.Addrs, MasterName: r.MasterName,
		ReadTimeout: timeout, WriteTimeout: timeout, DialTimeout: timeout}
	if r.URL != "" {
		u, err := redis.ParseURL(r.URL)
		if err != nil {
			return nil, nil, fmt.Errorf("store.redis.url: %w", err)
		}
		opts.Addrs, opts.Username, opts.Password, opts.DB, opts.TLSConfig = []string{u.Addr}, u.Username, u.Password, u.DB, u.TLSConfig
	}
	if r.PasswordEnv != "" {
		v, ok := lookupEnv(r.PasswordEnv)
		if !ok {
			return nil, nil, fmt.Errorf("store.redis.password_env: %s is not set", r.PasswordEnv)
		}
		opts.Password = v
	}
	client := redis.NewUniversalClient(opts)
	return sessions.NewRedis(client, sessions.RedisOptions{Options: sessions.Options{Clock: clock}, Prefix: r.Prefix}), client.Close, nil
}
