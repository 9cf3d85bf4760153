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

	"go.yaml.in/yaml/v3"

	"github.com/toolgate/toolgate/gateway"
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
