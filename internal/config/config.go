// Package config reads toolgate's one YAML configuration file.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/tools"
)

// Config is the whole configuration file.
type Config struct {
	Gateway gateway.Config `yaml:"gateway"`
	Tools   tools.Config   `yaml:"tools"`
	Log     Log            `yaml:"log"`
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
	cfg, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes and validates one YAML document.
func Parse(data []byte) (*Config, error) {
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
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}
