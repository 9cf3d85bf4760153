// Package config reads toolgate's one YAML configuration file.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.yaml.in/yaml/v3"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/internal/audit"
	"github.com/toolgate/toolgate/internal/telemetry"
	"github.com/toolgate/toolgate/policies"
	"github.com/toolgate/toolgate/tools"
)

// Config is the whole configuration file.
type Config struct {
	Gateway  gateway.Config                    `yaml:"gateway"`
	Admin    gateway.AdminConfig               `yaml:"admin"`
	Identity gateway.IdentityConfig            `yaml:"identity"`
	Profiles map[string]*gateway.ProfileConfig `yaml:"profiles"`
	Store    Store                             `yaml:"store"`
	Policies policies.Config                   `yaml:"policies"`
	Tools    tools.Config                      `yaml:"tools"`
	Log      Log                               `yaml:"log"`
	// Telemetry and Audit: traces, metrics, the audit stream (issue 7).
	Telemetry telemetry.Config `yaml:"telemetry"`
	Audit     audit.Config     `yaml:"audit"`
	// Runtime tunes the Go runtime's memory use (runtime.go).
	Runtime Runtime `yaml:"runtime"`
}

// Log says how toolgate logs.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error; default info
	Format string `yaml:"format"` // json or text; default json
}

// Validate fills defaults and checks every section.
func (c *Config) Validate() error {
	var errs []error
	if err := c.Gateway.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Admin.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := gateway.ValidateProfiles(c.Profiles, c.Identity); err != nil {
		errs = append(errs, err)
	}
	if err := c.Store.validate(); err != nil {
		errs = append(errs, err)
	}
	if len(c.Policies.Paths) > 0 {
		if err := c.Policies.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := c.Tools.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("tools: %w", err))
	}
	if err := c.Telemetry.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Audit.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Runtime.validate(); err != nil {
		errs = append(errs, err)
	}
	switch strings.ToLower(c.Log.Level) {
	case "":
		c.Log.Level = "info"
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log.level: %q is not one of debug, info, warn, error", c.Log.Level))
	}
	switch c.Log.Format {
	case "":
		c.Log.Format = "json"
	case "json", "text":
	default:
		errs = append(errs, fmt.Errorf("log.format: %q is not one of json, text", c.Log.Format))
	}
	return errors.Join(errs...)
}

// Load reads and validates the file at path. Unknown keys, duplicate keys
// and more than one document are errors; every error names the file.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := parse(data, filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// resolve makes the file paths of the configuration relative to dir, the
// configuration file's folder, so that it works from any working folder.
func (c *Config) resolve(dir string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	for i := range c.Policies.Paths {
		abs(&c.Policies.Paths[i])
	}
	for _, p := range c.Profiles {
		if p != nil {
			abs(&p.Baseline)
		}
	}
	for i := range c.Identity.JWT {
		abs(&c.Identity.JWT[i].JWKSFile)
	}
	abs(&c.Audit.File)
	abs(&c.Audit.SharedSignals.KeyFile)
	for i := range c.Tools.Servers {
		abs(&c.Tools.Servers[i].Sandbox)
		abs(&c.Tools.Servers[i].Dir)
	}
}

// Parse decodes and validates one YAML document; relative file paths in it
// are taken from the working folder.
func Parse(data []byte) (*Config, error) { return parse(data, ".") }

func parse(data []byte, dir string) (*Config, error) {
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the file is empty")
		}
		return nil, err
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("more than one YAML document: keep the configuration in one")
	}
	if dir != "." {
		cfg.resolve(dir)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// AuditSink opens where audit events go: the Redis Stream with the redis
// store, the audit file with the memory store, or nil (the log only). It
// opens its own Redis client, configured as the store's; close releases it.
func (c *Config) AuditSink(lookupEnv func(string) (string, bool)) (sink audit.Sink, close func() error, err error) {
	if c.Store.Type != "redis" {
		if c.Audit.File == "" {
			return nil, func() error { return nil }, nil
		}
		f, err := audit.OpenFile(c.Audit.File)
		if err != nil {
			return nil, nil, fmt.Errorf("audit.file: %w", err)
		}
		return f, f.Close, nil
	}
	client, err := c.Store.redisClient(lookupEnv)
	if err != nil {
		return nil, nil, err
	}
	return audit.NewRedisStream(client, c.Audit.StreamKey(c.Store.Redis.Prefix), c.Audit.MaxLen), client.Close, nil
}

// redisClient connects to the store's Redis as Store.Open does.
func (s Store) redisClient(lookupEnv func(string) (string, bool)) (redis.UniversalClient, error) {
	if lookupEnv == nil {
		lookupEnv = os.LookupEnv
	}
	r := s.Redis
	timeout := r.Timeout
	if timeout == 0 {
		timeout = 500 * time.Millisecond
	}
	opts := &redis.UniversalOptions{Addrs: r.Addrs, MasterName: r.MasterName,
		ReadTimeout: timeout, WriteTimeout: timeout, DialTimeout: timeout}
	bufferSizes(opts)
	if r.URL != "" {
		u, err := redis.ParseURL(r.URL)
		if err != nil {
			return nil, fmt.Errorf("store.redis.url: %w", err)
		}
		opts.Addrs, opts.Username, opts.Password, opts.DB, opts.TLSConfig = []string{u.Addr}, u.Username, u.Password, u.DB, u.TLSConfig
	}
	if r.PasswordEnv != "" {
		v, ok := lookupEnv(r.PasswordEnv)
		if !ok {
			return nil, fmt.Errorf("store.redis.password_env: %s is not set", r.PasswordEnv)
		}
		opts.Password = v
	}
	return redis.NewUniversalClient(opts), nil
}
