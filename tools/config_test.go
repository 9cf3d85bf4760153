package tools_test

import (
	"strings"
	"testing"
	"time"

	"github.com/toolgate/toolgate/tools"
)

func TestConfigValidate(t *testing.T) {
	ok := tools.ServerConfig{Name: "files", Transport: tools.TransportStdio, Command: "mcp-files"}
	tests := []struct {
		name    string
		cfg     tools.Config
		wantErr string // "" for valid
	}{
		{name: "valid", cfg: tools.Config{Servers: []tools.ServerConfig{ok,
			{Name: "web", Transport: tools.TransportStreamableHTTP, URL: "https://mcp.example.com/mcp", HeadersFromEnv: map[string]string{"Authorization": "WEB_TOKEN"}},
			{Name: "demo", Transport: tools.TransportBuiltin, Builtin: "demo"}}}},
		{name: "empty name", cfg: tools.Config{Servers: []tools.ServerConfig{{Transport: "stdio", Command: "x"}}}, wantErr: "name is required"},
		{name: "bad characters", cfg: tools.Config{Servers: []tools.ServerConfig{{Name: "my files", Transport: "stdio", Command: "x"}}}, wantErr: `name "my files": use only letters`},
		{name: "separator inside", cfg: tools.Config{Servers: []tools.ServerConfig{{Name: "my__files", Transport: "stdio", Command: "x"}}}, wantErr: `contains the separator "__"`},
		{name: "custom separator inside", cfg: tools.Config{Separator: "-", Servers: []tools.ServerConfig{{Name: "my-files", Transport: "stdio", Command: "x"}}}, wantErr: `contains the separator "-"`},
		{name: "bad separator", cfg: tools.Config{Separator: "/", Servers: []tools.ServerConfig{ok}}, wantErr: `tools.separator "/"`},
		{name: "duplicate", cfg: tools.Config{Servers: []tools.ServerConfig{ok, ok}}, wantErr: "already used by tools.servers[0]"},
		{name: "unknown transport", cfg: tools.Config{Servers: []tools.ServerConfig{{Name: "x", Transport: "grpc"}}}, wantErr: `transport "grpc" is unknown`},
		{name: "missing transport", cfg: tools.Config{Servers: []tools.ServerConfig{{Name: "x"}}}, wantErr: "transport is required"},
		{name: "stdio without command", cfg: tools.Config{Servers: []tools.ServerConfig{{Name: "x", Transport: "stdio"}}}, wantErr: "needs command"},
		{name: "http without url", cfg: tools.Config{Servers: []tools.ServerConfig{{Name: "x", Transport: "sse"}}}, wantErr: "needs url"},
		{name: "url scheme", cfg: tools.Config{Servers: []tools.ServerConfig{{Name: "x", Transport: "streamable-http", URL: "ftp://h/"}}}, wantErr: "must start with http"},
		{name: "unknown builtin", cfg: tools.Config{Servers: []tools.ServerConfig{{Name: "x", Transport: "builtin", Builtin: "shell"}}}, wantErr: `builtin "shell" is unknown`},
		{name: "url on stdio", cfg: tools.Config{Servers: []tools.ServerConfig{{Name: "x", Transport: "stdio", Command: "c", URL: "http://h"}}}, wantErr: "apply to transports streamable-http and sse only"},
		{name: "negative timeout", cfg: tools.Config{Servers: []tools.ServerConfig{{Name: "x", Transport: "stdio", Command: "c", Timeout: -time.Second}}}, wantErr: "is negative"},
		{name: "bad glob", cfg: tools.Config{Servers: []tools.ServerConfig{{Name: "x", Transport: "stdio", Command: "c", ToolLabels: map[string][]string{"[": {"a"}}}}}, wantErr: `tool_labels pattern "["`},
		{name: "env_from not a name", cfg: tools.Config{Servers: []tools.ServerConfig{{Name: "x", Transport: "stdio", Command: "c", EnvFrom: map[string]string{"TOKEN": "$HOME"}}}}, wantErr: "env_from TOKEN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Validate() = %v; want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Validate() = %v; want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestDecodeConfig(t *testing.T) {
	tests := []struct {
		name, yaml string
		wantErr    string
		check      func(t *testing.T, c tools.Config)
	}{
		{name: "full", yaml: `
separator: "."
servers:
  - name: files
    transport: stdio
    command: mcp-files
    args: [--root, /srv]
    env: {LOG_LEVEL: debug}
    env_from: {API_KEY: FILES_API_KEY}
    timeout: 30s
    labels: [private_data]
    tool_labels: {"write_*": [destructive]}
  - name: web
    transport: streamable-http
    url: https://mcp.example.com/mcp
    headers_from_env: {Authorization: WEB_TOKEN}
`, check: func(t *testing.T, c tools.Config) {
			if c.Separator != "." || len(c.Servers) != 2 || c.Servers[0].Timeout != 30*time.Second ||
				c.Servers[0].EnvFrom["API_KEY"] != "FILES_API_KEY" || c.Servers[1].HeadersFromEnv["Authorization"] != "WEB_TOKEN" {
				t.Errorf("DecodeConfig() = %+v; want the fields as written", c)
			}
		}},
		{name: "unknown field", yaml: "servers:\n  - name: x\n    transport: stdio\n    comand: y\n", wantErr: "field comand not found"},
		{name: "invalid", yaml: "servers:\n  - name: x\n    transport: stdio\n", wantErr: "needs command"},
		{name: "empty", yaml: "", check: func(t *testing.T, c tools.Config) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tools.DecodeConfig(strings.NewReader(tt.yaml))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("DecodeConfig() = %v; want error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodeConfig() = %v", err)
			}
			tt.check(t, c)
		})
	}
}
