package audit

import (
	"errors"
	"fmt"

	"github.com/toolgate/toolgate/internal/ssf"
)

// Config is the audit: section of toolgate's configuration.
type Config struct {
	// Stream is the Redis Stream key, used with the redis store. Default
	// "<store prefix>:audit".
	Stream string `yaml:"stream"`
	// MaxLen bounds the stream (approximately). Default 100000.
	MaxLen int64 `yaml:"max_len"`
	// File is where events go with the memory store, one JSON object per
	// line. Empty: with the memory store, events go to the log only.
	File string `yaml:"file"`
	// Log writes every event to toolgate's JSON log as well. Default true.
	Log *bool `yaml:"log"`
	// SharedSignals pushes a signed SET to receivers on every revoke.
	SharedSignals ssf.Config `yaml:"shared_signals"`
}

// Validate fills defaults and checks the values.
func (c *Config) Validate() error {
	var errs []error
	if c.MaxLen == 0 {
		c.MaxLen = 100000
	}
	if c.MaxLen < 100 {
		errs = append(errs, fmt.Errorf("audit.max_len: %d is below 100: keep at least a few minutes of events", c.MaxLen))
	}
	if c.Log == nil {
		t := true
		c.Log = &t
	}
	if err := c.SharedSignals.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// StreamKey is the stream to use with the store key prefix (default "toolgate").
func (c *Config) StreamKey(prefix string) string {
	if c.Stream != "" {
		return c.Stream
	}
	if prefix == "" {
		prefix = "toolgate"
	}
	return prefix + ":audit"
}
