package ssf

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// TestPushVerifiedByReceiver delivers a revocation to a receiver that
// first fails, then checks the SET's signature and claims as a real
// receiver would.
func TestPushVerifiedByReceiver(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	got := make(chan Claims, 1)
	errs := make(chan string, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		if ct := r.Header.Get("Content-Type"); ct != "application/secevent+jwt" {
			errs <- "Content-Type = " + ct
		}
		if a := r.Header.Get("Authorization"); a != "Bearer receiver-token" {
			errs <- "Authorization = " + a
		}
		body, _ := io.ReadAll(r.Body)
		jws, err := jose.ParseSigned(string(body), []jose.SignatureAlgorithm{jose.ES256})
		if err != nil {
			errs <- "parse: " + err.Error()
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if typ, _ := jws.Signatures[0].Header.ExtraHeaders["typ"].(string); typ != "secevent+jwt" {
			errs <- "typ = " + typ
		}
		if jws.Signatures[0].Header.KeyID != "k1" {
			errs <- "kid = " + jws.Signatures[0].Header.KeyID
		}
		payload, err := jws.Verify(&key.PublicKey)
		if err != nil {
			errs <- "verify: " + err.Error()
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		var c Claims
		if err := json.Unmarshal(payload, &c); err != nil {
			errs <- "claims: " + err.Error()
		}
		w.WriteHeader(http.StatusAccepted)
		got <- c
	}))
	defer srv.Close()

	cfg := Config{Issuer: "https://toolgate.example", KeyFile: "unused", KeyID: "k1",
		Receivers: []Receiver{{URL: srv.URL, Audience: "https://idp.example", TokenEnv: "RCV"}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	at := time.Unix(1_800_000_000, 0)
	signer, err := NewSigner(cfg.Issuer, key, cfg.KeyID, func() time.Time { return at })
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewPusher(cfg, signer, Options{
		LookupEnv: func(string) (string, bool) { return "receiver-token", true },
		Backoff:   func(int) time.Duration { return 0 },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx)
	p.Revoked(Revocation{Session: "s-1", Agent: "agent-1", Reason: "credential leaked", Initiator: "operator", Time: at})

	var c Claims
	select {
	case c = <-got:
	case e := <-errs:
		t.Fatal(e)
	case <-time.After(10 * time.Second):
		t.Fatal("no SET arrived")
	}
	select {
	case e := <-errs:
		t.Fatal(e)
	default:
	}
	if calls.Load() != 2 {
		t.Errorf("deliveries = %d; want 2 (one refused, one retried)", calls.Load())
	}
	checks := []struct{ name, got, want string }{
		{"iss", c.Issuer, "https://toolgate.example"},
		{"aud", c.Audience, "https://idp.example"},
		{"sub_id.session.id", c.Subject.Session.ID, "s-1"},
		{"sub_id.user.id", c.Subject.User.ID, "agent-1"},
		{"initiating_entity", c.Events[EventSessionRevoked].InitiatingEntity, "admin"},
		{"reason_admin.en", c.Events[EventSessionRevoked].ReasonAdmin["en"], "credential leaked"},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("SET %s = %q; want %q", ch.name, ch.got, ch.want)
		}
	}
	if c.IssuedAt != at.Unix() || c.Events[EventSessionRevoked].EventTimestamp != at.Unix() || len(c.ID) != 32 {
		t.Errorf("SET iat/event_timestamp/jti = %d/%d/%q", c.IssuedAt, c.Events[EventSessionRevoked].EventTimestamp, c.ID)
	}
}

func TestPermanentFailureIsNotRetried(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	var calls atomic.Int32
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"err":"invalid_audience"}`))
	}))
	defer srv.Close()
	cfg := Config{Issuer: "i", KeyFile: "k", Receivers: []Receiver{{URL: srv.URL}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	signer, _ := NewSigner("i", key, "", nil)
	p, _ := NewPusher(cfg, signer, Options{Backoff: func(int) time.Duration { return 0 }})
	go func() { p.deliver(context.Background(), 0, Revocation{Session: "s"}); close(done) }()
	<-done
	if calls.Load() != 1 {
		t.Errorf("deliveries after a 400 = %d; want 1", calls.Load())
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"off", Config{}, true},
		{"complete", Config{Issuer: "i", KeyFile: "k", Receivers: []Receiver{{URL: "https://r"}}}, true},
		{"no key", Config{Issuer: "i", Receivers: []Receiver{{URL: "https://r"}}}, false},
		{"bad url", Config{Issuer: "i", KeyFile: "k", Receivers: []Receiver{{URL: "r"}}}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); (err == nil) != tt.ok {
				t.Errorf("Validate() = %v; want ok=%v", err, tt.ok)
			}
		})
	}
}
