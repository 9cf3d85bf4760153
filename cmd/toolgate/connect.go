package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
)

// runConnect is the stdio bridge for agent hosts that only launch local
// stdio servers: it speaks MCP over stdio to the host and Streamable HTTP to
// the gateway, with a session token it gets and renews itself.
func runConnect(ctx context.Context, args []string, _, stderr io.Writer) int {
	fs := flag.NewFlagSet("connect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rawURL := fs.String("url", "", "the gateway's MCP endpoint, such as http://127.0.0.1:8080/mcp (required)")
	credEnv := fs.String("credential-env", "", "name of the environment variable holding the agent credential (required)")
	clientID := fs.String("client-id", "", "the agent's name, sent as client_id to the token endpoint (optional)")
	logLevel := fs.String("log-level", "warn", "debug | info | warn | error; logs go to stderr")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "toolgate connect: --log-level %q: use debug, info, warn or error\n", *logLevel)
		return 2
	}
	cfg := connectConfig{URL: *rawURL, ClientID: *clientID,
		Log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))}
	if *credEnv == "" {
		fmt.Fprintln(stderr, "toolgate connect: --credential-env is required: name the variable that holds the agent's credential")
		return 2
	}
	cfg.Credential = os.Getenv(*credEnv)
	if cfg.Credential == "" {
		fmt.Fprintf(stderr, "toolgate connect: environment variable %s is empty or not set: put the agent's credential in it\n", *credEnv)
		return 2
	}
	if err := cfg.validate(); err != nil {
		fmt.Fprintln(stderr, "toolgate connect:", err)
		return 2
	}
	if err := bridge(ctx, cfg, os.Stdin, os.Stdout); err != nil && ctx.Err() == nil {
		fmt.Fprintln(stderr, "toolgate connect:", err)
		return 1
	}
	return 0
}

// connectConfig is what the stdio bridge needs.
type connectConfig struct {
	URL        string // the gateway's MCP endpoint
	Credential string // the agent credential, exchanged for session tokens
	ClientID   string // optional client_id for the token endpoint
	Log        *slog.Logger
	HTTPClient *http.Client     // nil: http.DefaultClient
	Now        func() time.Time // nil: time.Now
}

func (c *connectConfig) validate() error {
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--url %q: give the gateway's MCP endpoint, such as http://127.0.0.1:8080/mcp", c.URL)
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.HTTPClient == nil {
		c.HTTPClient = http.DefaultClient
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// bridge relays JSON-RPC messages, one per line, between in/out (the host)
// and the gateway until in ends or ctx is cancelled.
func bridge(ctx context.Context, cfg connectConfig, in io.Reader, out io.Writer) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	tokens := &tokenSource{cfg: cfg}
	w := &lineWriter{w: out}
	asks := &pendingAsks{m: map[string]chan json.RawMessage{}}

	tr, err := transport.NewStreamableHTTP(cfg.URL,
		transport.WithHTTPBasicClient(cfg.HTTPClient),
		transport.WithHTTPHeaderFunc(func(ctx context.Context) map[string]string {
			tok, err := tokens.Token(ctx)
			if err != nil {
				cfg.Log.Warn("no session token", "err", err)
				return nil
			}
			return map[string]string{"Authorization": "Bearer " + tok}
		}),
		// The GET stream carries list_changed and other unsolicited messages.
		transport.WithContinuousListening(),
		transport.WithHTTPLogger(cfg.Log),
	)
	if err != nil {
		return fmt.Errorf("gateway transport: %w", err)
	}
	tr.SetNotificationHandler(func(n mcp.JSONRPCNotification) { w.write(n) })
	tr.SetRequestHandler(func(ctx context.Context, req transport.JSONRPCRequest) (*transport.JSONRPCResponse, error) {
		return asks.ask(ctx, w, req)
	})
	if err := tr.Start(ctx); err != nil {
		return fmt.Errorf("gateway transport: %w", err)
	}
	defer func() { _ = tr.Close() }()

	var wg sync.WaitGroup
	defer wg.Wait()
	r := bufio.NewReaderSize(in, 64<<10)
	for {
		line, err := r.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			msg, perr := parseHostMessage(line)
			switch {
			case perr != nil:
				cfg.Log.Warn("message from the host is not JSON-RPC; dropped", "err", perr)
			case msg.Method != "" && msg.ID != nil:
				wg.Add(1)
				go func() {
					defer wg.Done()
					w.write(forward(ctx, cfg, tr, tokens, msg))
				}()
			case msg.Method != "":
				n := mcp.JSONRPCNotification{JSONRPC: mcp.JSONRPC_VERSION, Notification: mcp.Notification{Method: msg.Method}}
				if len(msg.Params) > 0 {
					_ = json.Unmarshal(msg.Params, &n.Params)
				}
				if err := tr.SendNotification(ctx, n); err != nil {
					cfg.Log.Warn("notification not delivered to the gateway", "method", msg.Method, "err", err)
				}
			case msg.ID != nil:
				asks.answer(msg.ID, line)
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read from the host: %w", err)
		}
	}
}

// hostMessage is one JSON-RPC message from the host, its parts kept raw.
type hostMessage struct {
	ID     json.RawMessage `json:"id,omitempty"`
	Method string          `json:"method,omitempty"`
	Params json.RawMessage `json:"params,omitempty"`
}

func parseHostMessage(line []byte) (hostMessage, error) {
	var m hostMessage
	if err := json.Unmarshal(line, &m); err != nil {
		return m, err
	}
	if string(m.ID) == "null" {
		m.ID = nil
	}
	return m, nil
}

// forward sends one host request to the gateway and returns the answer for
// the host. A 401 means the session token was refused before anything ran
// (expired, revoked): the bridge gets a new one and tries once more.
func forward(ctx context.Context, cfg connectConfig, tr *transport.StreamableHTTP, tokens *tokenSource, msg hostMessage) any {
	var id mcp.RequestId
	if err := json.Unmarshal(msg.ID, &id); err != nil {
		return rpcError(msg.ID, mcp.INVALID_REQUEST, "toolgate connect: invalid id: "+err.Error())
	}
	req := transport.JSONRPCRequest{JSONRPC: mcp.JSONRPC_VERSION, ID: id, Method: msg.Method}
	if len(msg.Params) > 0 {
		req.Params = msg.Params
	}
	resp, err := tr.SendRequest(ctx, req)
	var authErr *transport.AuthorizationRequiredError
	if errors.As(err, &authErr) {
		cfg.Log.Info("session token refused; getting a new one", "method", msg.Method)
		tokens.Invalidate()
		resp, err = tr.SendRequest(ctx, req)
	}
	if err != nil {
		if terr := tokens.Err(); terr != nil {
			err = fmt.Errorf("%w (no session token: %v)", err, terr)
		}
		return rpcError(msg.ID, mcp.INTERNAL_ERROR, "toolgate connect: "+err.Error())
	}
	if msg.Method == string(mcp.MethodInitialize) && resp.Error == nil {
		var init struct {
			ProtocolVersion string `json:"protocolVersion"`
		}
		if json.Unmarshal(resp.Result, &init) == nil && init.ProtocolVersion != "" {
			tr.SetProtocolVersion(init.ProtocolVersion)
		}
	}
	out := map[string]any{"jsonrpc": mcp.JSONRPC_VERSION, "id": msg.ID}
	if resp.Error != nil {
		out["error"] = resp.Error
	} else {
		out["result"] = resp.Result
	}
	return out
}

func rpcError(id json.RawMessage, code int, msg string) map[string]any {
	return map[string]any{"jsonrpc": mcp.JSONRPC_VERSION, "id": id, "error": map[string]any{"code": code, "message": msg}}
}

// lineWriter writes one JSON message per line; safe for concurrent use.
type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lineWriter) write(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = l.w.Write(append(b, '\n'))
}

// pendingAsks are the gateway's requests (sampling, elicitation) waiting
// for the host's answer, by JSON-RPC id.
type pendingAsks struct {
	mu sync.Mutex
	m  map[string]chan json.RawMessage
}

func (p *pendingAsks) ask(ctx context.Context, w *lineWriter, req transport.JSONRPCRequest) (*transport.JSONRPCResponse, error) {
	idJSON, err := json.Marshal(req.ID)
	if err != nil {
		return nil, err
	}
	ch := make(chan json.RawMessage, 1)
	p.mu.Lock()
	p.m[string(idJSON)] = ch
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.m, string(idJSON))
		p.mu.Unlock()
	}()
	w.write(req)
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case raw := <-ch:
		var resp transport.JSONRPCResponse
		if err := json.Unmarshal(raw, &resp); err != nil {
			return nil, fmt.Errorf("the host's answer to %s: %w", req.Method, err)
		}
		return &resp, nil
	}
}

func (p *pendingAsks) answer(id json.RawMessage, raw []byte) {
	var compact bytes.Buffer
	if json.Compact(&compact, id) != nil {
		return
	}
	p.mu.Lock()
	ch := p.m[compact.String()]
	p.mu.Unlock()
	if ch != nil {
		ch <- append(json.RawMessage(nil), raw...)
	}
}

// tokenSource gets session tokens from the gateway's token endpoint with
// the client-credentials grant, and renews them before they expire.
type tokenSource struct {
	cfg connectConfig

	mu       sync.Mutex
	endpoint string // token endpoint, found once through the OAuth metadata
	token    string
	renewAt  time.Time
	lastErr  error // why the last attempt to get a token failed; nil once one works
}

// Token returns a session token valid for a while yet.
func (t *tokenSource) Token(ctx context.Context) (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.token != "" && t.cfg.Now().Before(t.renewAt) {
		return t.token, nil
	}
	if t.endpoint == "" {
		ep, err := discoverTokenEndpoint(ctx, t.cfg)
		if err != nil {
			t.lastErr = err
			return "", err
		}
		t.endpoint = ep
	}
	tok, life, err := requestToken(ctx, t.cfg, t.endpoint)
	if err != nil {
		t.token, t.lastErr = "", err
		return "", err
	}
	t.token, t.lastErr = tok, nil
	// Renew when a fifth of the lifetime is left, or 30s, whichever is
	// more (but at half the lifetime at the latest), so that a request in
	// flight does not outlive its token.
	t.renewAt = t.cfg.Now().Add(life - min(max(life/5, 30*time.Second), life/2))
	return tok, nil
}

// Err is why the last attempt to get a token failed, or nil.
func (t *tokenSource) Err() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lastErr
}

// Invalidate drops the current token: the next Token gets a new one.
func (t *tokenSource) Invalidate() {
	t.mu.Lock()
	t.token = ""
	t.mu.Unlock()
}

// discoverTokenEndpoint follows the MCP authorization discovery: the
// protected-resource metadata (RFC 9728) of the endpoint names the
// authorization server, whose metadata (RFC 8414) names the token endpoint.
func discoverTokenEndpoint(ctx context.Context, cfg connectConfig) (string, error) {
	u, _ := url.Parse(cfg.URL)
	origin := u.Scheme + "://" + u.Host
	var prm struct {
		AuthorizationServers []string `json:"authorization_servers"`
	}
	if err := getJSON(ctx, cfg, origin+"/.well-known/oauth-protected-resource"+strings.TrimSuffix(u.Path, "/"), &prm); err != nil {
		return "", fmt.Errorf("discover the token endpoint: %w", err)
	}
	if len(prm.AuthorizationServers) == 0 {
		return "", errors.New("discover the token endpoint: the protected-resource metadata names no authorization server")
	}
	as, err := url.Parse(prm.AuthorizationServers[0])
	if err != nil {
		return "", fmt.Errorf("discover the token endpoint: authorization server %q: %w", prm.AuthorizationServers[0], err)
	}
	var meta struct {
		TokenEndpoint string `json:"token_endpoint"`
	}
	if err := getJSON(ctx, cfg, as.Scheme+"://"+as.Host+"/.well-known/oauth-authorization-server"+strings.TrimSuffix(as.Path, "/"), &meta); err != nil {
		return "", fmt.Errorf("discover the token endpoint: %w", err)
	}
	if meta.TokenEndpoint == "" {
		return "", errors.New("discover the token endpoint: the authorization-server metadata has no token_endpoint")
	}
	return meta.TokenEndpoint, nil
}

func getJSON(ctx context.Context, cfg connectConfig, u string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := cfg.HTTPClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(v); err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	return nil
}

// requestToken exchanges the credential for a session token
// (client_credentials, client_secret_basic) and returns its lifetime.
func requestToken(ctx context.Context, cfg connectConfig, endpoint string) (string, time.Duration, error) {
	form := url.Values{"grant_type": {"client_credentials"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return "", 0, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	// RFC 6749 §2.3.1: both parts are form-urlencoded inside Basic.
	req.SetBasicAuth(url.QueryEscape(cfg.ClientID), url.QueryEscape(cfg.Credential))
	resp, err := cfg.HTTPClient.Do(req)
	if err != nil {
		return "", 0, fmt.Errorf("token endpoint: %w", err)
	}
	defer resp.Body.Close()
	var body struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&body); err != nil {
		return "", 0, fmt.Errorf("token endpoint: %s: %w", resp.Status, err)
	}
	if resp.StatusCode != http.StatusOK || body.AccessToken == "" {
		return "", 0, fmt.Errorf("token endpoint refused the credential: %s: %s", body.Error, body.Description)
	}
	life := time.Duration(body.ExpiresIn) * time.Second
	if life <= 0 {
		life = time.Minute
	}
	return body.AccessToken, life, nil
}
