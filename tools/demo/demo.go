// Package demo is toolgate's built-in MCP tool server, whose harmless tools mimic the risky ones toolgate exists to govern.
package demo

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// Options configures the demo server.
type Options struct {
	// Sandbox is the folder read_file and list_files serve. Empty: a temporary
	// folder with a few sample files, removed by Close.
	Sandbox string
	// StepDelay is the pause between slow_count steps when the call gives none; default 100ms.
	StepDelay time.Duration
	// Logger receives a line per tool call; nil discards.
	Logger *slog.Logger
}

// Server is a running demo server. Connect to it in-process with
// client.NewInProcessClient(s.MCPServer()).
type Server struct {
	mcp        *server.MCPServer
	root       *os.Root
	sandbox    string
	tempDir    bool
	hmacKey    []byte
	signingKey ed25519.PrivateKey
	stepDelay  time.Duration
	log        *slog.Logger
}

// Vault holds the made-up secrets read_secret serves. None of them is real.
var vault = map[string]string{
	"db/prod/password":    "correct-horse-battery-staple-DEMO",
	"payments/api_key":    "sk_demo_4eC39HqLyjWDarjtT1zdp7dc",
	"github/deploy_token": "ghp_DEMOdemoDEMOdemoDEMOdemoDEMOdemo00",
	"aws/access_key_id":   "AKIADEMODEMODEMODEMO",
}

// New builds the demo server; it creates the sample sandbox when opts.Sandbox is empty.
func New(opts Options) (*Server, error) {
	s := &Server{stepDelay: opts.StepDelay, log: opts.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.stepDelay <= 0 {
		s.stepDelay = 100 * time.Millisecond
	}
	s.sandbox = opts.Sandbox
	if s.sandbox == "" {
		dir, err := os.MkdirTemp("", "toolgate-demo-sandbox-")
		if err != nil {
			return nil, fmt.Errorf("demo: create sandbox: %w", err)
		}
		s.sandbox, s.tempDir = dir, true
		if err := writeSamples(dir); err != nil {
			_ = os.RemoveAll(dir)
			return nil, fmt.Errorf("demo: write sample files: %w", err)
		}
	}
	root, err := os.OpenRoot(s.sandbox)
	if err != nil {
		s.removeTemp()
		return nil, fmt.Errorf("demo: open sandbox: %w", err)
	}
	s.root = root
	s.hmacKey = make([]byte, 32)
	rand.Read(s.hmacKey)
	_, s.signingKey, err = ed25519.GenerateKey(rand.Reader)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("demo: generate signing key: %w", err)
	}
	s.mcp = server.NewMCPServer("toolgate-demo", "1.0.0",
		server.WithToolCapabilities(true),
		server.WithResourceCapabilities(false, true),
		server.WithPromptCapabilities(true),
	)
	s.addTools()
	s.addResources()
	return s, nil
}

// MCPServer returns the mcp-go server to connect to.
func (s *Server) MCPServer() *server.MCPServer { return s.mcp }

// Sandbox returns the folder read_file serves.
func (s *Server) Sandbox() string { return s.sandbox }

// Close releases the sandbox, removing it if New created it.
func (s *Server) Close() error {
	var err error
	if s.root != nil {
		err = s.root.Close()
	}
	s.removeTemp()
	return err
}

func (s *Server) removeTemp() {
	if s.tempDir {
		_ = os.RemoveAll(s.sandbox)
	}
}

func writeSamples(dir string) error {
	files := map[string]string{
		"README.txt":             "This is toolgate's demo sandbox. Files here are served by the read_file tool.\n",
		"notes/todo.md":          "# TODO\n\n- rotate the payments API key\n- review the prod deploy of billing v2.3.1\n",
		"reports/q3-summary.csv": "region,revenue\nemea,1200\namer,3400\n",
	}
	for name, body := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func ptr(b bool) *bool { return &b }

type hints struct{ readOnly, destructive, openWorld, idempotent bool }

func (s *Server) tool(name, title, description string, h hints, schema string, handler server.ToolHandlerFunc) {
	t := mcp.NewToolWithRawSchema(name, description, json.RawMessage(schema))
	t.Title = title
	t.Annotations = mcp.ToolAnnotation{
		Title:           title,
		ReadOnlyHint:    ptr(h.readOnly),
		DestructiveHint: ptr(h.destructive),
		IdempotentHint:  ptr(h.idempotent),
		OpenWorldHint:   ptr(h.openWorld),
	}
	s.mcp.AddTool(t, func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		s.log.Debug("demo tool call", "tool", name)
		return handler(ctx, req)
	})
}

// bind decodes the call's arguments strictly into v; unknown fields are an error.
func bind(req mcp.CallToolRequest, v any) error {
	raw, err := json.Marshal(req.GetRawArguments())
	if err != nil {
		return err
	}
	if string(raw) == "null" {
		raw = []byte("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("invalid arguments: %w", err)
	}
	return nil
}

func jsonResult(v any) *mcp.CallToolResult {
	b, _ := json.MarshalIndent(v, "", "  ")
	return mcp.NewToolResultStructured(v, string(b))
}

func (s *Server) addTools() {
	s.tool("read_file", "Read file",
		"Read a text file from the demo sandbox folder. Paths are relative to the sandbox; paths that leave it are refused.",
		hints{readOnly: true, idempotent: true},
		`{"type":"object","properties":{"path":{"type":"string","description":"File path relative to the sandbox, e.g. notes/todo.md","minLength":1}},"required":["path"],"additionalProperties":false}`,
		func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			var in struct {
				Path string `json:"path"`
			}
			if err := bind(req, &in); err != nil {
				return mcp.NewToolResultError(err.Error()), nil
			}
			b, err := s.root.ReadFile(cleanRel(in.Path))
			if err != nil {
				return mcp.NewToolResultError(fmt.Sprintf("read_file %q: %v", in.Path, sandboxError(err))), nil
			}
			return mcp.NewToolResultText(string(b)), nil
		})

	s.tool("list_files", "List files",
		"List the files in a folder of the demo sandbox (default: its top folder).",
		hints{readOnly: true, idempotent: true},
		`{"type":"object","properties":{"path":{"type":"string","description":"Folder relative to the sandbox; default \".\""}},"additionalProperties":false}`,
		func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			var in struct {
				Path string `json:"path"`
			}
			if err := bind(req, &in); err != nil {
				return mcp.NewToolResultError(err.Error()), nil
			}
			entries, err := fs.ReadDir(s.root.FS(), cleanRel(in.Path))
			if err != nil {
				return mcp.NewToolResultError(fmt.Sprintf("list_files %q: %v", in.Path, sandboxError(err))), nil
			}
			type entry struct {
				Name string `json:"name"`
				Dir  bool   `json:"dir"`
			}
			out := struct {
				Files []entry `json:"files"`
			}{Files: []entry{}}
			for _, e := range entries {
				out.Files = append(out.Files, entry{Name: e.Name(), Dir: e.IsDir()})
			}
			return jsonResult(out), nil
		})

	s.tool("read_secret", "Read secret",
		"Read a secret from the demo vault. The vault holds made-up values only; list them with the demo://vault/index resource.",
		hints{readOnly: true, idempotent: true},
		`{"type":"object","properties":{"name":{"type":"string","description":"Secret path, e.g. db/prod/password"}},"required":["name"],"additionalProperties":false}`,
		func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			var in struct {
				Name string `json:"name"`
			}
			if err := bind(req, &in); err != nil {
				return mcp.NewToolResultError(err.Error()), nil
			}
			v, ok := vault[in.Name]
			if !ok {
				return mcp.NewToolResultError(fmt.Sprintf("read_secret: no secret %q in the demo vault", in.Name)), nil
			}
			return mcp.NewToolResultText(v), nil
		})

	s.tool("http_request", "HTTP request (simulated)",
		"Send an HTTP request. Simulated: nothing leaves the machine; the result is the request that would have been sent.",
		hints{openWorld: true},
		`{"type":"object","properties":{"method":{"type":"string","enum":["GET","POST","PUT","PATCH","DELETE"],"default":"GET"},"url":{"type":"string","format":"uri"},"headers":{"type":"object","additionalProperties":{"type":"string"}},"body":{"type":"string"}},"required":["url"],"additionalProperties":false}`,
		func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			var in struct {
				Method  string            `json:"method"`
				URL     string            `json:"url"`
				Headers map[string]string `json:"headers"`
				Body    string            `json:"body"`
			}
			if err := bind(req, &in); err != nil {
				return mcp.NewToolResultError(err.Error()), nil
			}
			if in.Method == "" {
				in.Method = "GET"
			}
			return jsonResult(map[string]any{"simulated": true, "would_send": in}), nil
		})

	s.tool("run_shell", "Run shell command (simulated)",
		"Run a shell command. Simulated: nothing is executed; the result echoes the command that would have run.",
		hints{destructive: true, openWorld: true},
		`{"type":"object","properties":{"command":{"type":"string","minLength":1},"cwd":{"type":"string"}},"required":["command"],"additionalProperties":false}`,
		func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			var in struct {
				Command string `json:"command"`
				Cwd     string `json:"cwd"`
			}
			if err := bind(req, &in); err != nil {
				return mcp.NewToolResultError(err.Error()), nil
			}
			return jsonResult(map[string]any{"simulated": true, "would_run": in.Command, "cwd": in.Cwd}), nil
		})

	s.tool("deploy", "Deploy service (simulated)",
		"Deploy a version of a service to an environment. Simulated: nothing is deployed.",
		hints{destructive: true, openWorld: true},
		`{"type":"object","properties":{"service":{"type":"string","minLength":1},"version":{"type":"string","pattern":"^v?[0-9]+(\\.[0-9]+)*$"},"environment":{"type":"string","enum":["dev","staging","prod"]}},"required":["service","version","environment"],"additionalProperties":false}`,
		func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			var in struct {
				Service     string `json:"service"`
				Version     string `json:"version"`
				Environment string `json:"environment"`
			}
			if err := bind(req, &in); err != nil {
				return mcp.NewToolResultError(err.Error()), nil
			}
			switch in.Environment {
			case "dev", "staging", "prod":
			default:
				return mcp.NewToolResultError(fmt.Sprintf("deploy: environment %q is not one of dev, staging, prod", in.Environment)), nil
			}
			return jsonResult(map[string]any{"simulated": true, "deployed": in, "status": "rolled out"}), nil
		})

	s.tool("sign_artifact", "Sign artifact",
		"Sign an artifact digest with a throwaway key held by the demo server (HMAC-SHA256 or Ed25519).",
		hints{idempotent: true},
		`{"type":"object","properties":{"digest":{"type":"string","description":"Hex SHA-256 digest of the artifact","pattern":"^[0-9a-fA-F]{64}$"},"algorithm":{"type":"string","enum":["hmac-sha256","ed25519"],"default":"ed25519"}},"required":["digest"],"additionalProperties":false}`,
		func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			var in struct {
				Digest    string `json:"digest"`
				Algorithm string `json:"algorithm"`
			}
			if err := bind(req, &in); err != nil {
				return mcp.NewToolResultError(err.Error()), nil
			}
			digest, err := hex.DecodeString(in.Digest)
			if err != nil || len(digest) != sha256.Size {
				return mcp.NewToolResultError("sign_artifact: digest must be 64 hex characters (a SHA-256 digest)"), nil
			}
			out := map[string]string{"digest": strings.ToLower(in.Digest)}
			switch in.Algorithm {
			case "", "ed25519":
				out["algorithm"] = "ed25519"
				out["signature"] = hex.EncodeToString(ed25519.Sign(s.signingKey, digest))
				out["public_key"] = hex.EncodeToString(s.signingKey.Public().(ed25519.PublicKey))
			case "hmac-sha256":
				mac := hmac.New(sha256.New, s.hmacKey)
				mac.Write(digest)
				out["algorithm"] = "hmac-sha256"
				out["signature"] = hex.EncodeToString(mac.Sum(nil))
			default:
				return mcp.NewToolResultError(fmt.Sprintf("sign_artifact: algorithm %q: use hmac-sha256 or ed25519", in.Algorithm)), nil
			}
			return jsonResult(out), nil
		})

	s.tool("slow_count", "Slow count",
		"Count from 1 to n, sending a progress notification per step and pausing between steps. Stops when cancelled.",
		hints{readOnly: true, idempotent: true},
		`{"type":"object","properties":{"n":{"type":"integer","minimum":1,"maximum":1000},"delay_ms":{"type":"integer","minimum":0,"maximum":10000,"description":"Pause between steps; default 100"}},"required":["n"],"additionalProperties":false}`,
		func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			var in struct {
				N       int  `json:"n"`
				DelayMS *int `json:"delay_ms"`
			}
			if err := bind(req, &in); err != nil {
				return mcp.NewToolResultError(err.Error()), nil
			}
			if in.N < 1 || in.N > 1000 {
				return mcp.NewToolResultError("slow_count: n must be between 1 and 1000"), nil
			}
			delay := s.stepDelay
			if in.DelayMS != nil {
				delay = time.Duration(*in.DelayMS) * time.Millisecond
			}
			return SlowCount(ctx, req, in.N, delay)
		})
}

// SlowCount counts to n with a progress notification per step (when the
// caller asked for progress), pausing delay between steps, and stops with
// ctx.Err() when the call is cancelled.
func SlowCount(ctx context.Context, req mcp.CallToolRequest, n int, delay time.Duration) (*mcp.CallToolResult, error) {
	var token mcp.ProgressToken
	if req.Params.Meta != nil {
		token = req.Params.Meta.ProgressToken
	}
	srv := server.ServerFromContext(ctx)
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for i := 1; i <= n; i++ {
		if i > 1 && delay > 0 {
			timer.Reset(delay)
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("slow_count stopped at %d of %d: %w", i-1, n, ctx.Err())
			case <-timer.C:
			}
		} else if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("slow_count stopped at %d of %d: %w", i-1, n, err)
		}
		if token != nil && srv != nil {
			_ = srv.SendNotificationToClient(ctx, string(mcp.MethodNotificationProgress), map[string]any{
				"progressToken": token,
				"progress":      i,
				"total":         n,
				"message":       fmt.Sprintf("counted %d of %d", i, n),
			})
		}
	}
	return jsonResult(map[string]int{"counted": n}), nil
}

// cleanRel turns a caller's path into a path relative to the sandbox root;
// os.Root refuses anything that still escapes (.., absolute paths, symlinks out).
func cleanRel(p string) string {
	if p == "" {
		return "."
	}
	return filepath.FromSlash(p)
}

func sandboxError(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return errors.New("no such file in the sandbox")
	}
	if strings.Contains(err.Error(), "escapes") || strings.Contains(err.Error(), "outside") {
		return errors.New("path escapes the sandbox")
	}
	return err
}

func (s *Server) addResources() {
	s.mcp.AddResource(mcp.NewResource("demo://sandbox/README.txt", "sandbox_readme",
		mcp.WithResourceDescription("The README of the demo sandbox"), mcp.WithMIMEType("text/plain")),
		func(ctx context.Context, req mcp.ReadResourceRequest) ([]mcp.ResourceContents, error) {
			b, err := s.root.ReadFile("README.txt")
			if err != nil {
				return nil, fmt.Errorf("read README.txt: %w", sandboxError(err))
			}
			return []mcp.ResourceContents{mcp.TextResourceContents{URI: req.Params.URI, MIMEType: "text/plain", Text: string(b)}}, nil
		})
	s.mcp.AddResource(mcp.NewResource("demo://vault/index", "vault_index",
		mcp.WithResourceDescription("Names of the secrets in the demo vault (not their values)"), mcp.WithMIMEType("application/json")),
		func(ctx context.Context, req mcp.ReadResourceRequest) ([]mcp.ResourceContents, error) {
			names := make([]string, 0, len(vault))
			for k := range vault {
				names = append(names, k)
			}
			sort.Strings(names)
			b, _ := json.Marshal(names)
			return []mcp.ResourceContents{mcp.TextResourceContents{URI: req.Params.URI, MIMEType: "application/json", Text: string(b)}}, nil
		})
	s.mcp.AddResourceTemplate(mcp.NewResourceTemplate("demo://files/{path}", "sandbox_file",
		mcp.WithTemplateDescription("A file of the demo sandbox, by path relative to it"), mcp.WithTemplateMIMEType("text/plain")),
		func(ctx context.Context, req mcp.ReadResourceRequest) ([]mcp.ResourceContents, error) {
			rel := strings.TrimPrefix(req.Params.URI, "demo://files/")
			b, err := s.root.ReadFile(cleanRel(path.Clean(rel)))
			if err != nil {
				return nil, fmt.Errorf("read %q: %w", rel, sandboxError(err))
			}
			return []mcp.ResourceContents{mcp.TextResourceContents{URI: req.Params.URI, MIMEType: "text/plain", Text: string(b)}}, nil
		})
	s.mcp.AddPrompt(mcp.NewPrompt("incident_review",
		mcp.WithPromptDescription("Ask the agent to review a service's recent deploys and secrets use"),
		mcp.WithArgument("service", mcp.ArgumentDescription("Service to review, e.g. billing"), mcp.RequiredArgument()),
	), func(ctx context.Context, req mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		service := req.Params.Arguments["service"]
		if service == "" {
			return nil, errors.New("incident_review: argument service is required")
		}
		text := fmt.Sprintf("Review the last deploys of %q: list the files in the sandbox, read notes/todo.md, and say which secrets the service may need. Do not deploy anything.", service)
		return mcp.NewGetPromptResult("Incident review for "+service,
			[]mcp.PromptMessage{mcp.NewPromptMessage(mcp.RoleUser, mcp.NewTextContent(text))}), nil
	})
}
