package gateway

import (
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"net/url"
	"strings"
)

// The token endpoint speaks the OAuth 2.1 client-credentials grant: an
// agent credential in, a short-lived session token out (RFC 6749 §4.4,
// errors as §5.2). Client authentication: client_secret_basic,
// client_secret_post, or a JWT assertion (RFC 7523, private_key_jwt or a
// workload token of a configured issuer).

const jwtBearerAssertion = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// maxTokenRequestBytes bounds a token request's form body.
const maxTokenRequestBytes = 64 << 10

func (g *Gateway) serveToken(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxTokenRequestBytes)
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "the body must be application/x-www-form-urlencoded: "+err.Error(), false)
		return
	}
	form := r.PostForm
	for k, v := range form {
		if len(v) > 1 {
			oauthError(w, http.StatusBadRequest, "invalid_request", "parameter "+k+" is repeated", false)
			return
		}
	}
	if gt := form.Get("grant_type"); gt != "client_credentials" {
		if gt == "" {
			oauthError(w, http.StatusBadRequest, "invalid_request", "grant_type is required", false)
		} else {
			oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "only client_credentials is supported", false)
		}
		return
	}
	if g.auth == nil {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "no agent identities are configured", false)
		return
	}
	clientID, secret, basic := r.BasicAuth()
	if basic {
		// RFC 6749 §2.3.1: both parts are form-urlencoded inside Basic.
		clientID, _ = url.QueryUnescape(clientID)
		secret, _ = url.QueryUnescape(secret)
	} else if a := form.Get("client_assertion"); a != "" {
		if form.Get("client_assertion_type") != jwtBearerAssertion {
			oauthError(w, http.StatusBadRequest, "invalid_request", "client_assertion_type must be "+jwtBearerAssertion, false)
			return
		}
		clientID, secret = form.Get("client_id"), a
	} else {
		clientID, secret = form.Get("client_id"), form.Get("client_secret")
	}
	if secret == "" {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "client authentication is required", true)
		return
	}
	id, err := g.auth.Authenticate(r.Context(), secret)
	if err != nil || (clientID != "" && clientID != id.Agent) {
		if err == nil {
			err = errors.New("client_id does not match the credential")
		}
		g.log.Info("token request refused", "client_id", clientID, "err", err)
		oauthError(w, http.StatusUnauthorized, "invalid_client", "client authentication failed", basic)
		return
	}
	spec, herr := g.specFor(id, form.Get("scope"))
	if herr != nil {
		oauthError(w, http.StatusBadRequest, herr.oauth, herr.msg, false)
		return
	}
	sess, token, err := g.store.Create(r.Context(), spec)
	if err != nil {
		herr := g.sessionError(err)
		code := herr.oauth
		if code == "" || code == "invalid_token" {
			code = "server_error"
		}
		status := http.StatusBadRequest
		if herr.status >= 500 {
			status = herr.status
		}
		oauthError(w, status, code, herr.msg, false)
		return
	}
	g.log.Info("session opened", "session", sess.ID, "agent", sess.Agent, "profile", sess.Profile, "expires", sess.Expires)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"access_token": token,
		"token_type":   "Bearer",
		"expires_in":   int64(math.Ceil(sess.Expires.Sub(g.now()).Seconds())),
		"scope":        strings.Join(sess.Scope, " "),
	})
}

func oauthError(w http.ResponseWriter, status int, code, desc string, basicChallenge bool) {
	if basicChallenge {
		w.Header().Set("WWW-Authenticate", `Basic realm="toolgate"`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}

// serveResourceMetadata is RFC 9728 protected-resource metadata: it tells
// MCP clients where to get a token.
func (g *Gateway) serveResourceMetadata(w http.ResponseWriter, _ *http.Request) {
	base := g.publicURL()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"resource":                 base + "/mcp",
		"authorization_servers":    []string{base},
		"bearer_methods_supported": []string{"header"},
		"resource_name":            "toolgate",
	})
}

// serveAuthServerMetadata is RFC 8414 authorization-server metadata for
// the token endpoint.
func (g *Gateway) serveAuthServerMetadata(w http.ResponseWriter, _ *http.Request) {
	base := g.publicURL()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"issuer":         base,
		"token_endpoint": base + "/oauth/token",
		// RFC 8414 §2 makes authorization_endpoint required unless no grant
		// uses it, and the official TypeScript SDK refuses metadata without
		// it. toolgate has no interactive grant: the endpoint only explains.
		"authorization_endpoint":                           base + "/oauth/authorize",
		"grant_types_supported":                            []string{"client_credentials"},
		"response_types_supported":                         []string{"token"},
		"token_endpoint_auth_methods_supported":            []string{"client_secret_basic", "client_secret_post", "private_key_jwt"},
		"token_endpoint_auth_signing_alg_values_supported": []string{"RS256", "ES256", "EdDSA"},
	})
}

// serveAuthorize is the authorization endpoint named in the metadata. No
// grant toolgate supports uses it (RFC 6749 §4.1.2.1 error shape).
func (g *Gateway) serveAuthorize(w http.ResponseWriter, _ *http.Request) {
	oauthError(w, http.StatusBadRequest, "unsupported_response_type",
		"toolgate issues session tokens only with the client_credentials grant at "+g.publicURL()+"/oauth/token", false)
}
