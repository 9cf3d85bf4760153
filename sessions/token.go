package sessions

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
)

// tokenPrefix makes a leaked token easy to recognise (for secret scanners and logs).
const tokenPrefix = "tgs_"

// idLen is the length of a session id: hex of the first 16 bytes of the token hash.
const idLen = 32

// NewToken returns a fresh opaque bearer token carrying 256 random bits, and its hash, which is
// all a store keeps.
func NewToken() (token string, hash [32]byte) {
	var b [32]byte
	// crypto/rand.Read never returns an error (it crashes the program if the OS source fails).
	_, _ = rand.Read(b[:])
	token = tokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	return token, HashToken(token)
}

// HashToken returns the SHA-256 hash of a token, the form in which stores keep and look up tokens.
func HashToken(token string) [32]byte {
	return sha256.Sum256([]byte(token))
}

// IDFromHash returns the id of the session whose token has this hash.
//
// The id is derived from the hash so that a token lookup reads the session's own keys: every
// key of a session then shares one Redis Cluster hash tag, with no separate token index.
// Knowing an id reveals nothing usable about the token (SHA-256 is one-way over 256 random bits).
func IDFromHash(hash [32]byte) string {
	return hex.EncodeToString(hash[:idLen/2])
}
