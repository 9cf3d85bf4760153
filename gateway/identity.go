package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// IdentityConfig says which agent credentials toolgate accepts.
type IdentityConfig struct {
	APIKeys []APIKeyConfig    `yaml:"api_keys"`
	JWT     []JWTIssuerConfig `yaml:"jwt"`
}

// APIKeyConfig is one agent's API key, given as its SHA-256 or read from
// an environment variable at start. The key itself is never in the file.
type APIKeyConfig struct {
	Agent   string            `yaml:"agent"`
	Profile string            `yaml:"profile"`
	SHA256  string            `yaml:"sha256"`  // hex SHA-256 of the key
	KeyEnv  string            `yaml:"key_env"` // or: name of the variable holding the key
	Labels  map[string]string `yaml:"labels"`
}

// JWTIssuerConfig accepts tokens of an external issuer: a CI platform or a
// workload identity provider presents the token it gave the job.
type JWTIssuerConfig struct {
	Issuer   string `yaml:"issuer"`
	Audience string `yaml:"audience"`
	JWKSURL  string `yaml:"jwks_url"`
	JWKSFile string `yaml:"jwks_file"`
	// AgentClaim names the claim holding the agent id. Default "sub".
	AgentClaim string `yaml:"agent_claim"`
	// ProfileClaim names a claim holding the profile; Profile is used when
	// it is empty or absent.
	ProfileClaim string            `yaml:"profile_claim"`
	Profile      string            `yaml:"profile"`
	Labels       map[string]string `yaml:"labels"`
	// Algorithms accepted. Default RS256, ES256, EdDSA.
	Algorithms []string `yaml:"algorithms"`
	// Leeway for exp, nbf and iat. Default 30s.
	Leeway time.Duration `yaml:"leeway"`
}

// Identity is an authenticated agent.
type Identity struct {
	Agent   string
	Profile string
	Labels  map[string]string
	Claims  map[string]any // JWT claims; for API keys, {"sub": agent}
	Method  string         // "api_key" or "jwt"
}

// ErrBadCredential is returned for any credential that does not
// authenticate; the reason is logged, never told to the caller.
var ErrBadCredential = errors.New("invalid credential")

// Authenticator checks agent credentials.
type Authenticator struct {
	keys    map[[32]byte]APIKeyConfig
	issuers []*jwtIssuer
	now     func() time.Time
}

// NewAuthenticator prepares the configured identities. lookupEnv reads
// key_env variables (nil: os.LookupEnv); client fetches JWKS URLs (nil:
// a client with a 10s timeout); now is the clock (nil: time.Now).
func NewAuthenticator(cfg IdentityConfig, lookupEnv func(string) (string, bool), client *http.Client, now func() time.Time) (*Authenticator, error) {
	if lookupEnv == nil {
		lookupEnv = os.LookupEnv
	}
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	if now == nil {
		now = time.Now
	}
	a := &Authenticator{keys: map[[32]byte]APIKeyConfig{}, now: now}
	var errs []error
	for i, k := range cfg.APIKeys {
		where := fmt.Sprintf("identity.api_keys[%d] (agent %q)", i, k.Agent)
		var sum [32]byte
		switch {
		case k.SHA256 != "" && k.KeyEnv != "":
			errs = append(errs, fmt.Errorf("%s: give sha256 or key_env, not both", where))
			continue
		case k.SHA256 != "":
			b, err := hex.DecodeString(k.SHA256)
			if err != nil || len(b) != 32 {
				errs = append(errs, fmt.Errorf("%s: sha256 must be 64 hex digits (sha256sum of the key)", where))
				continue
			}
			copy(sum[:], b)
		case k.KeyEnv != "":
			v, ok := lookupEnv(k.KeyEnv)
			if !ok || v == "" {
				errs = append(errs, fmt.Errorf("%s: environment variable %s is not set", where, k.KeyEnv))
				continue
			}
			sum = sha256.Sum256([]byte(v))
		default:
			errs = append(errs, fmt.Errorf("%s: give sha256 or key_env", where))
			continue
		}
		if _, dup := a.keys[sum]; dup {
			errs = append(errs, fmt.Errorf("%s: the same key is configured twice", where))
			continue
		}
		a.keys[sum] = k
	}
	for i, j := range cfg.JWT {
		iss, err := newJWTIssuer(j, client)
		if err != nil {
			errs = append(errs, fmt.Errorf("identity.jwt[%d] (issuer %q): %w", i, j.Issuer, err))
			continue
		}
		a.issuers = append(a.issuers, iss)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return a, nil
}

// HashCredential is how toolgate keys credentials: SHA-256.
func HashCredential(s string) [32]byte { return sha256.Sum256([]byte(s)) }

// Authenticate checks a credential presented as a bearer token or client
// secret: an API key, or a JWT of a configured issuer.
func (a *Authenticator) Authenticate(ctx context.Context, credential string) (Identity, error) {
	if credential == "" {
		return Identity{}, ErrBadCredential
	}
	if k, ok := a.keys[HashCredential(credential)]; ok {
		return Identity{Agent: k.Agent, Profile: k.Profile, Labels: k.Labels,
			Claims: map[string]any{"sub": k.Agent}, Method: "api_key"}, nil
	}
	if strings.Count(credential, ".") == 2 && len(a.issuers) > 0 {
		return a.authenticateJWT(ctx, credential)
	}
	return Identity{}, ErrBadCredential
}

// IsCredential reports whether s looks like an agent credential this
// authenticator could accept without checking it: a configured API key's
// hash, or a three-part token when JWT issuers are configured.
func (a *Authenticator) IsCredential(s string) bool {
	if _, ok := a.keys[HashCredential(s)]; ok {
		return true
	}
	return strings.Count(s, ".") == 2 && len(a.issuers) > 0
}

func (a *Authenticator) authenticateJWT(ctx context.Context, raw string) (Identity, error) {
	var algs []jose.SignatureAlgorithm
	for _, iss := range a.issuers {
		algs = append(algs, iss.algs...)
	}
	tok, err := jwt.ParseSigned(raw, algs)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %v", ErrBadCredential, err)
	}
	var unverified jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return Identity{}, fmt.Errorf("%w: %v", ErrBadCredential, err)
	}
	for _, iss := range a.issuers {
		if iss.cfg.Issuer != unverified.Issuer {
			continue
		}
		return iss.verify(ctx, tok, a.now())
	}
	return Identity{}, fmt.Errorf("%w: issuer %q is not configured", ErrBadCredential, unverified.Issuer)
}

type jwtIssuer struct {
	cfg    JWTIssuerConfig
	algs   []jose.SignatureAlgorithm
	client *http.Client

	mu        sync.Mutex
	keys      *jose.JSONWebKeySet
	fetchedAt time.Time
}

const (
	jwksMaxAge       = 10 * time.Minute
	jwksMinRefetch   = 30 * time.Second
	jwksMaxBodyBytes = 1 << 20
)

func newJWTIssuer(cfg JWTIssuerConfig, client *http.Client) (*jwtIssuer, error) {
	if cfg.Issuer == "" || cfg.Audience == "" {
		return nil, errors.New("issuer and audience are required")
	}
	if (cfg.JWKSURL == "") == (cfg.JWKSFile == "") {
		return nil, errors.New("give exactly one of jwks_url and jwks_file")
	}
	if cfg.AgentClaim == "" {
		cfg.AgentClaim = "sub"
	}
	if cfg.Leeway == 0 {
		cfg.Leeway = 30 * time.Second
	}
	if len(cfg.Algorithms) == 0 {
		cfg.Algorithms = []string{"RS256", "ES256", "EdDSA"}
	}
	iss := &jwtIssuer{cfg: cfg, client: client}
	for _, alg := range cfg.Algorithms {
		switch a := jose.SignatureAlgorithm(alg); a {
		case jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512,
			jose.ES256, jose.ES384, jose.ES512, jose.EdDSA:
			iss.algs = append(iss.algs, a)
		default:
			return nil, fmt.Errorf("algorithm %q is not accepted: use an asymmetric one such as RS256, ES256 or EdDSA", alg)
		}
	}
	if cfg.JWKSFile != "" {
		data, err := os.ReadFile(cfg.JWKSFile)
		if err != nil {
			return nil, fmt.Errorf("jwks_file: %w", err)
		}
		var set jose.JSONWebKeySet
		if err := json.Unmarshal(data, &set); err != nil {
			return nil, fmt.Errorf("jwks_file %s: %w", cfg.JWKSFile, err)
		}
		iss.keys = &set
	}
	return iss, nil
}

// keySet returns the issuer's keys, fetching the JWKS URL when the cached
// set is old, or when refresh is asked (an unknown key id) and the last
// fetch is not too recent.
func (iss *jwtIssuer) keySet(ctx context.Context, now time.Time, refresh bool) (*jose.JSONWebKeySet, error) {
	iss.mu.Lock()
	defer iss.mu.Unlock()
	if iss.cfg.JWKSURL == "" {
		return iss.keys, nil
	}
	stale := iss.keys == nil || now.Sub(iss.fetchedAt) > jwksMaxAge || (refresh && now.Sub(iss.fetchedAt) > jwksMinRefetch)
	if !stale {
		return iss.keys, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, iss.cfg.JWKSURL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := iss.client.Do(req)
	if err != nil {
		if iss.keys != nil {
			return iss.keys, nil // keep serving the last good set
		}
		return nil, fmt.Errorf("fetch JWKS: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		if iss.keys != nil {
			return iss.keys, nil
		}
		return nil, fmt.Errorf("fetch JWKS: %s", resp.Status)
	}
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(io.LimitReader(resp.Body, jwksMaxBodyBytes)).Decode(&set); err != nil {
		return nil, fmt.Errorf("decode JWKS: %w", err)
	}
	iss.keys, iss.fetchedAt = &set, now
	return iss.keys, nil
}

func (iss *jwtIssuer) verify(ctx context.Context, tok *jwt.JSONWebToken, now time.Time) (Identity, error) {
	kid := ""
	if len(tok.Headers) > 0 {
		kid = tok.Headers[0].KeyID
	}
	var key *jose.JSONWebKey
	for attempt := 0; attempt < 2 && key == nil; attempt++ {
		set, err := iss.keySet(ctx, now, attempt > 0)
		if err != nil {
			return Identity{}, fmt.Errorf("%w: %v", ErrBadCredential, err)
		}
		for i := range set.Keys {
			if kid == "" || set.Keys[i].KeyID == kid {
				key = &set.Keys[i]
				break
			}
		}
	}
	if key == nil {
		return Identity{}, fmt.Errorf("%w: no key %q in the issuer's JWKS", ErrBadCredential, kid)
	}
	var std jwt.Claims
	claims := map[string]any{}
	if err := tok.Claims(key.Key, &std, &claims); err != nil {
		return Identity{}, fmt.Errorf("%w: %v", ErrBadCredential, err)
	}
	if std.Expiry == nil {
		return Identity{}, fmt.Errorf("%w: token has no exp", ErrBadCredential)
	}
	if err := std.ValidateWithLeeway(jwt.Expected{Issuer: iss.cfg.Issuer, AnyAudience: jwt.Audience{iss.cfg.Audience}, Time: now}, iss.cfg.Leeway); err != nil {
		return Identity{}, fmt.Errorf("%w: %v", ErrBadCredential, err)
	}
	agent, _ := claims[iss.cfg.AgentClaim].(string)
	if agent == "" {
		return Identity{}, fmt.Errorf("%w: claim %q is missing", ErrBadCredential, iss.cfg.AgentClaim)
	}
	profile := iss.cfg.Profile
	if iss.cfg.ProfileClaim != "" {
		if p, _ := claims[iss.cfg.ProfileClaim].(string); p != "" {
			profile = p
		}
	}
	return Identity{Agent: agent, Profile: profile, Labels: iss.cfg.Labels, Claims: claims, Method: "jwt"}, nil
}
