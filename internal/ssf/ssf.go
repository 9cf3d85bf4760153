// Package ssf tells identity providers and SIEMs that toolgate revoked a
// session, as signed Security Event Tokens (RFC 8417, CAEP session-revoked)
// pushed to receivers (RFC 8935).
package ssf

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// EventSessionRevoked is the CAEP event type of a revoked session.
const EventSessionRevoked = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"

// Config is the shared_signals: part of the audit configuration.
type Config struct {
	// Issuer is the SETs' iss, normally toolgate's public URL.
	Issuer string `yaml:"issuer"`
	// KeyFile is a PEM private key (EC P-256, RSA or Ed25519) that signs
	// the SETs. Required when receivers are given.
	KeyFile string `yaml:"key_file"`
	// KeyID is the kid header, for receivers that look the key up in a JWKS.
	KeyID string `yaml:"key_id"`
	// Receivers get every revocation.
	Receivers []Receiver `yaml:"receivers"`
	// MaxAttempts bounds the deliveries of one SET. Default 6.
	MaxAttempts int `yaml:"max_attempts"`
	// Timeout bounds one delivery. Default 5s.
	Timeout time.Duration `yaml:"timeout"`
}

// Receiver is one push endpoint (RFC 8935).
type Receiver struct {
	// URL is the receiver's push endpoint.
	URL string `yaml:"url"`
	// Audience is the SET's aud for this receiver. Default: URL.
	Audience string `yaml:"audience"`
	// TokenEnv names a variable holding a bearer token for the endpoint.
	TokenEnv string `yaml:"token_env"`
}

// Enabled reports whether any receiver is configured.
func (c *Config) Enabled() bool { return len(c.Receivers) > 0 }

// Validate fills defaults and checks the values.
func (c *Config) Validate() error {
	if !c.Enabled() {
		return nil
	}
	var errs []error
	if c.Issuer == "" {
		errs = append(errs, errors.New("audit.shared_signals.issuer: give the issuer of the SETs (toolgate's public URL)"))
	}
	if c.KeyFile == "" {
		errs = append(errs, errors.New("audit.shared_signals.key_file: give a PEM private key to sign SETs (openssl ecparam -name prime256v1 -genkey -noout)"))
	}
	for i, r := range c.Receivers {
		u, err := url.Parse(r.URL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			errs = append(errs, fmt.Errorf("audit.shared_signals.receivers[%d].url: %q is not an http(s) URL", i, r.URL))
		}
		if r.Audience == "" {
			c.Receivers[i].Audience = r.URL
		}
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 6
	}
	if c.MaxAttempts < 1 {
		errs = append(errs, fmt.Errorf("audit.shared_signals.max_attempts: %d must be at least 1", c.MaxAttempts))
	}
	if c.Timeout == 0 {
		c.Timeout = 5 * time.Second
	}
	return errors.Join(errs...)
}

// Revocation is what a SET reports.
type Revocation struct {
	Session string
	Agent   string
	Reason  string
	// Initiator is "policy" or "operator" (CAEP initiating_entity: policy or admin).
	Initiator string
	Time      time.Time
}

// Signer makes SETs.
type Signer struct {
	issuer string
	signer jose.Signer
	now    func() time.Time
}

// NewSigner signs with key (an *ecdsa.PrivateKey, *rsa.PrivateKey or
// ed25519.PrivateKey).
func NewSigner(issuer string, key crypto.Signer, keyID string, now func() time.Time) (*Signer, error) {
	var alg jose.SignatureAlgorithm
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		switch k.Curve.Params().BitSize {
		case 256:
			alg = jose.ES256
		case 384:
			alg = jose.ES384
		default:
			alg = jose.ES512
		}
	case *rsa.PrivateKey:
		alg = jose.RS256
	case ed25519.PrivateKey:
		alg = jose.EdDSA
	default:
		return nil, fmt.Errorf("SET signing key: %T is not an EC, RSA or Ed25519 key", key)
	}
	// RFC 8417 section 2.3: typ "secevent+jwt".
	opts := (&jose.SignerOptions{}).WithType("secevent+jwt")
	if keyID != "" {
		opts = opts.WithHeader("kid", keyID)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		return nil, fmt.Errorf("SET signer: %w", err)
	}
	if now == nil {
		now = time.Now
	}
	return &Signer{issuer: issuer, signer: s, now: now}, nil
}

// LoadKey reads a PEM private key (PKCS#8, SEC 1 or PKCS#1).
func LoadKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("SET signing key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("SET signing key %s: no PEM block", path)
	}
	if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		if s, ok := k.(crypto.Signer); ok {
			return s, nil
		}
	}
	if k, err := x509.ParseECPrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	return nil, fmt.Errorf("SET signing key %s: not a PKCS#8, EC or RSA private key", path)
}

// Claims are a SET's claims (RFC 8417 section 2.2, SSF 1.0 sub_id).
type Claims struct {
	Issuer   string                    `json:"iss"`
	IssuedAt int64                     `json:"iat"`
	ID       string                    `json:"jti"`
	Audience string                    `json:"aud"`
	TxnID    string                    `json:"txn,omitempty"`
	Subject  Subject                   `json:"sub_id"`
	Events   map[string]SessionRevoked `json:"events"`
}

// Subject is a complex subject: the session and the agent it belonged to.
type Subject struct {
	Format  string     `json:"format"`
	Session *SimpleSub `json:"session,omitempty"`
	User    *SimpleSub `json:"user,omitempty"`
}

// SimpleSub is an opaque subject identifier.
type SimpleSub struct {
	Format string `json:"format"`
	ID     string `json:"id"`
}

// SessionRevoked is the CAEP session-revoked event's payload.
type SessionRevoked struct {
	EventTimestamp   int64             `json:"event_timestamp"`
	InitiatingEntity string            `json:"initiating_entity,omitempty"`
	ReasonAdmin      map[string]string `json:"reason_admin,omitempty"`
}

// Sign makes the SET of r for audience.
func (s *Signer) Sign(r Revocation, audience string) (string, Claims, error) {
	var jti [16]byte
	_, _ = rand.Read(jti[:])
	at := r.Time
	if at.IsZero() {
		at = s.now()
	}
	entity := "system"
	switch r.Initiator {
	case "policy":
		entity = "policy"
	case "operator":
		entity = "admin"
	}
	c := Claims{
		Issuer: s.issuer, IssuedAt: s.now().Unix(), ID: hex.EncodeToString(jti[:]), Audience: audience, TxnID: r.Session,
		Subject: Subject{Format: "complex", Session: &SimpleSub{Format: "opaque", ID: r.Session}},
		Events:  map[string]SessionRevoked{EventSessionRevoked: {EventTimestamp: at.Unix(), InitiatingEntity: entity}},
	}
	if r.Agent != "" {
		c.Subject.User = &SimpleSub{Format: "opaque", ID: r.Agent}
	}
	if r.Reason != "" {
		c.Events[EventSessionRevoked] = SessionRevoked{EventTimestamp: at.Unix(), InitiatingEntity: entity,
			ReasonAdmin: map[string]string{"en": r.Reason}}
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", c, fmt.Errorf("encode SET: %w", err)
	}
	jws, err := s.signer.Sign(payload)
	if err != nil {
		return "", c, fmt.Errorf("sign SET: %w", err)
	}
	tok, err := jws.CompactSerialize()
	return tok, c, err
}

// Options are a Pusher's collaborators.
type Options struct {
	// Client sends the SETs. Nil: http.DefaultClient.
	Client *http.Client
	// Logger: nil discards.
	Logger *slog.Logger
	// LookupEnv reads receivers' token_env. Nil: os.LookupEnv.
	LookupEnv func(string) (string, bool)
	// Backoff is the wait before attempt n (1-based retries). Nil:
	// 500ms doubling, at most 30s.
	Backoff func(n int) time.Duration
	// QueueSize bounds the revocations waiting to be sent; beyond it they
	// are dropped (and logged): delivery never holds up enforcement. Default 1024.
	QueueSize int
}

// Pusher delivers SETs to the receivers in the background.
type Pusher struct {
	cfg    Config
	signer *Signer
	opts   Options
	tokens []string
	queue  chan Revocation
}

// NewPusher builds a pusher for cfg (validated); run it with Run.
func NewPusher(cfg Config, signer *Signer, opts Options) (*Pusher, error) {
	if opts.Client == nil {
		opts.Client = http.DefaultClient
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.LookupEnv == nil {
		opts.LookupEnv = os.LookupEnv
	}
	if opts.Backoff == nil {
		opts.Backoff = func(n int) time.Duration { return min(500*time.Millisecond<<(n-1), 30*time.Second) }
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = 1024
	}
	p := &Pusher{cfg: cfg, signer: signer, opts: opts, queue: make(chan Revocation, opts.QueueSize)}
	for i, r := range cfg.Receivers {
		tok := ""
		if r.TokenEnv != "" {
			v, ok := opts.LookupEnv(r.TokenEnv)
			if !ok || strings.TrimSpace(v) == "" {
				return nil, fmt.Errorf("audit.shared_signals.receivers[%d].token_env: %s is not set", i, r.TokenEnv)
			}
			tok = strings.TrimSpace(v)
		}
		p.tokens = append(p.tokens, tok)
	}
	return p, nil
}

// Revoked queues r for delivery; it never blocks.
func (p *Pusher) Revoked(r Revocation) {
	select {
	case p.queue <- r:
	default:
		p.opts.Logger.Error("SET not sent: the delivery queue is full", "session", r.Session)
	}
}

// Run delivers queued revocations until ctx ends.
func (p *Pusher) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-p.queue:
			for i := range p.cfg.Receivers {
				p.deliver(ctx, i, r)
			}
		}
	}
}

// deliver sends r to receiver i, retrying with backoff on network errors
// and 5xx/429 answers; a 4xx other than 429 is final (RFC 8935 section 2.3).
func (p *Pusher) deliver(ctx context.Context, i int, r Revocation) {
	rc := p.cfg.Receivers[i]
	tok, _, err := p.signer.Sign(r, rc.Audience)
	if err != nil {
		p.opts.Logger.Error("SET not signed", "session", r.Session, "err", err)
		return
	}
	for attempt := 1; attempt <= p.cfg.MaxAttempts; attempt++ {
		retry, err := p.send(ctx, rc.URL, p.tokens[i], tok)
		if err == nil {
			p.opts.Logger.Info("SET delivered", "receiver", rc.URL, "session", r.Session)
			return
		}
		if !retry || attempt == p.cfg.MaxAttempts {
			p.opts.Logger.Error("SET not delivered", "receiver", rc.URL, "session", r.Session, "attempts", attempt, "err", err)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(p.opts.Backoff(attempt)):
		}
	}
}

func (p *Pusher) send(ctx context.Context, endpoint, bearer, set string) (retry bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(set))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/secevent+jwt")
	req.Header.Set("Accept", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := p.opts.Client.Do(req)
	if err != nil {
		return true, fmt.Errorf("push SET: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	switch {
	case resp.StatusCode == http.StatusAccepted || resp.StatusCode == http.StatusOK:
		return false, nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return true, fmt.Errorf("push SET: %s", resp.Status)
	}
	return false, fmt.Errorf("push SET: %s: %s", resp.Status, bytes.TrimSpace(body))
}
