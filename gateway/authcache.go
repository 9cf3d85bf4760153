package gateway

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/toolgate/toolgate/sessions"
)

// authCacheTTL bounds how long a token lookup is reused on this replica.
const authCacheTTL = time.Second

// authCacheMax bounds the number of sessions the authentication cache holds.
const authCacheMax = 4096

// authCache remembers, for at most authCacheTTL, that a token hash belonged to an active
// session, so that a tools/call is authenticated without its own store round trip: the
// admission that follows reads the session from the store anyway.
//
// A cached lookup only lets a request reach admission; it never admits. Admission takes a
// fresh Snapshot and commits on its version, so a call of a session that was revoked, frozen
// or expired meanwhile is refused there, on every replica, at once. What the cache can change
// is the form of that refusal: while an entry lives, a request of an ended session gets a
// refused tool result instead of an HTTP 401. Entries are dropped when this replica receives
// the session's revoked, frozen, expired, narrowed or resumed event (before it acknowledges a
// revoke or freeze, so a revoke that has returned left no entry on an acknowledging replica),
// and the cache is used only while the gateway follows those events (Watch). A replica that
// misses an event answers at most authCacheTTL more requests of that session with a tool
// error rather than a 401.
type authCache struct {
	on      atomic.Bool
	drops   atomic.Uint64 // counts drops, so that a lookup that raced one is not cached
	mu      sync.Mutex
	entries map[string]authEntry // by session id
}

type authEntry struct {
	hash  [32]byte
	sess  *sessions.Session // without history; shared, read only
	until time.Time         // by the monotonic clock
}

func newAuthCache() *authCache { return &authCache{entries: map[string]authEntry{}} }

// get returns the active session the token hash belonged to within authCacheTTL, if known.
// now is the gateway's clock, against which the session's expiry is checked.
func (c *authCache) get(hash [32]byte, now time.Time) (*sessions.Session, bool) {
	if !c.on.Load() {
		return nil, false
	}
	id := sessions.IDFromHash(hash)
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[id]
	if !ok || e.hash != hash {
		return nil, false
	}
	if time.Now().After(e.until) || !now.Before(e.sess.Expires) {
		delete(c.entries, id)
		return nil, false
	}
	return e.sess, true
}

// generation is to be read before a lookup and given to put with its result.
func (c *authCache) generation() uint64 { return c.drops.Load() }

// put remembers an active session found for hash by a lookup that began at generation gen;
// if a session was dropped since, the lookup may predate that change and is not kept.
func (c *authCache) put(gen uint64, hash [32]byte, sess *sessions.Session) {
	if !c.on.Load() || sess.State != sessions.StateActive {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.drops.Load() != gen {
		return
	}
	if len(c.entries) >= authCacheMax {
		clear(c.entries) // all entries are young: starting over costs one lookup each
	}
	c.entries[sess.ID] = authEntry{hash: hash, sess: sess, until: time.Now().Add(authCacheTTL)}
}

// drop forgets session id.
func (c *authCache) drop(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.drops.Add(1)
	delete(c.entries, id)
}

// enable turns the cache on or off; off also empties it.
func (c *authCache) enable(on bool) {
	c.on.Store(on)
	if !on {
		c.mu.Lock()
		c.drops.Add(1)
		clear(c.entries)
		c.mu.Unlock()
	}
}
