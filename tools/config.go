package tools

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"path"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Transports a server can be reached over.
const (
	TransportBuiltin        = "builtin"
	TransportStdio          = "stdio"
	TransportStreamableHTTP = "streamable-http"
	TransportSSE            = "sse"
)

// DefaultSeparator joins a server name and a tool name in the catalog.
const DefaultSeparator = "__"

// DefaultTimeout is the per-call deadline of a server that sets none.
const DefaultTimeout = 60 * time.Second

// Config lists the upstream tool servers toolgate connects to.
type Config struct {
	// Separator joins server and tool names ("files" + "__" + "read_file"); default "__".
	Separator string         `yaml:"separator"`
	Servers   []ServerConfig `yaml:"servers"`
}

// ServerConfig describes one upstream tool server.
type ServerConfig struct {
	Name      string `yaml:"name"`
	Transport string `yaml:"transport"` // "builtin" | "stdio" | "streamable-http" | "sse"
	Builtin   string `yaml:"builtin"`   // transport builtin: "demo"
	Sandbox   string `yaml:"sandbox"`   // builtin demo: folder read_file serves (optional)

	Command string            `yaml:"command"`
	Args    []string          `yaml:"args"`
	Env     map[string]string `yaml:"env"`      // literal, non-secret values for the child
	EnvFrom map[string]string `yaml:"env_from"` // child variable -> name of toolgate's env var holding the value
	Dir     string            `yaml:"dir"`

	URL            string            `yaml:"url"`
	Headers        map[string]string `yaml:"headers"`          // literal, non-secret headers
	HeadersFromEnv map[string]string `yaml:"headers_from_env"` // header -> env var name, value used as-is

	// Unprefixed offers this server's tools and prompts under their own
	// names, without "<name><separator>": for one server whose clients
	// expect its names as they are (a conformance fixture, say). Names that
	// collide with another server's are left out, as always.
	Unprefixed bool `yaml:"unprefixed"`

	Timeout    time.Duration       `yaml:"timeout"`     // per-call deadline; default 60s
	Labels     []string            `yaml:"labels"`      // labels for every tool of this server
	ToolLabels map[string][]string `yaml:"tool_labels"` // glob over the upstream tool name -> labels
}

// DecodeConfig reads a Config from YAML, rejecting unknown fields, and validates it.
func DecodeConfig(r io.Reader) (Config, error) {
	var cfg Config
	dec := yaml.NewDecoder(r)
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("decode tools config: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

var (
	serverNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	envNameRE    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	// toolNameRE is the shape of a namespaced name agents see (MCP tool name guidance).
	toolNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,128}$`)
)

// separator returns the configured separator or the default.
func (c *Config) separator() string {
	if c.Separator == "" {
		return DefaultSeparator
	}
	return c.Separator
}

// Validate reports every mistake in the config, each with the field to fix.
func (c *Config) Validate() error {
	var errs []error
	sep := c.separator()
	if !toolNameRE.MatchString(sep) {
		errs = append(errs, fmt.Errorf("tools.separator %q: use only letters, digits, '_', '.' or '-'", sep))
	}
	seen := map[string]int{}
	for i, s := range c.Servers {
		field := fmt.Sprintf("tools.servers[%d]", i)
		if s.Name != "" {
			field = fmt.Sprintf("tools.servers[%d] (%s)", i, s.Name)
		}
		bad := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
		}
		switch {
		case s.Name == "":
			bad("name is required")
		case !serverNameRE.MatchString(s.Name):
			bad("name %q: use only letters, digits, '_' and '-'", s.Name)
		case strings.Contains(s.Name, sep):
			bad("name %q contains the separator %q: rename the server or set tools.separator", s.Name, sep)
		case len(s.Name)+len(sep) >= 128:
			bad("name %q is too long: namespaced tool names must stay within 128 characters", s.Name)
		}
		if j, dup := seen[s.Name]; dup && s.Name != "" {
			bad("name %q is already used by tools.servers[%d]: server names must be unique", s.Name, j)
		} else {
			seen[s.Name] = i
		}
		if s.Timeout < 0 {
			bad("timeout %v is negative: give a positive duration such as 30s, or leave it out for %v", s.Timeout, DefaultTimeout)
		}
		for pattern := range s.ToolLabels {
			if _, err := path.Match(pattern, ""); err != nil {
				bad("tool_labels pattern %q: %v", pattern, err)
			}
		}
		for k, v := range s.EnvFrom {
			if !envNameRE.MatchString(k) || !envNameRE.MatchString(v) {
				bad("env_from %s: %s: both sides must be environment variable names", k, v)
			}
		}
		for h, v := range s.HeadersFromEnv {
			if !envNameRE.MatchString(v) {
				bad("headers_from_env %s: %q is not an environment variable name", h, v)
			}
		}
		switch s.Transport {
		case TransportBuiltin:
			if s.Builtin != "demo" {
				bad("builtin %q is unknown: the only built-in server is \"demo\"", s.Builtin)
			}
		case TransportStdio:
			if s.Command == "" {
				bad("transport stdio needs command")
			}
		case TransportStreamableHTTP, TransportSSE:
			u, err := url.Parse(s.URL)
			switch {
			case s.URL == "":
				bad("transport %s needs url", s.Transport)
			case err != nil:
				bad("url: %v", err)
			case u.Scheme != "http" && u.Scheme != "https":
				bad("url %q must start with http:// or https://", s.URL)
			}
		case "":
			bad("transport is required: one of builtin, stdio, streamable-http, sse")
		default:
			bad("transport %q is unknown: use one of builtin, stdio, streamable-http, sse", s.Transport)
		}
		if s.Transport != TransportStdio && (s.Command != "" || len(s.Args) > 0 || len(s.Env) > 0 || len(s.EnvFrom) > 0 || s.Dir != "") {
			bad("command, args, env, env_from and dir apply to transport stdio only")
		}
		if s.Transport != TransportStreamableHTTP && s.Transport != TransportSSE && (s.URL != "" || len(s.Headers) > 0 || len(s.HeadersFromEnv) > 0) {
			bad("url, headers and headers_from_env apply to transports streamable-http and sse only")
		}
		if s.Transport != TransportBuiltin && (s.Builtin != "" || s.Sandbox != "") {
			bad("builtin and sandbox apply to transport builtin only")
		}
	}
	return errors.Join(errs...)
}
