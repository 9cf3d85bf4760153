package gateway

import (
	"testing"
	"time"

	"github.com/toolgate/toolgate/sessions"
)

// The token cache keeps only active sessions, only while events are followed, forgets a
// session on its event, and never keeps a lookup that raced an event.
func TestAuthCache(t *testing.T) {
	now := time.Now()
	hash := sessions.HashToken("tgs_token-a")
	active := func() *sessions.Session {
		return &sessions.Session{ID: sessions.IDFromHash(hash), State: sessions.StateActive, Expires: now.Add(time.Hour)}
	}
	for _, tc := range []struct {
		name string
		run  func(c *authCache)
		want bool
	}{
		{"kept", func(c *authCache) { c.put(c.generation(), hash, active()) }, true},
		{"not following events", func(c *authCache) {
			c.enable(false)
			c.put(c.generation(), hash, active())
		}, false},
		{"dropped on event", func(c *authCache) {
			c.put(c.generation(), hash, active())
			c.drop(active().ID)
		}, false},
		{"lookup raced an event", func(c *authCache) {
			gen := c.generation()
			c.drop(active().ID)
			c.put(gen, hash, active())
		}, false},
		{"event of another session", func(c *authCache) {
			gen := c.generation()
			c.put(gen, hash, active())
			c.drop("other")
		}, true},
		{"frozen not kept", func(c *authCache) {
			s := active()
			s.State = sessions.StateFrozen
			c.put(c.generation(), hash, s)
		}, false},
		{"past its expiry", func(c *authCache) {
			s := active()
			s.Expires = now
			c.put(c.generation(), hash, s)
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newAuthCache()
			c.enable(true)
			tc.run(c)
			if _, got := c.get(hash, now); got != tc.want {
				t.Errorf("get after %s = %v; want %v", tc.name, got, tc.want)
			}
			// Another token never matches, even for the same id.
			if _, got := c.get(sessions.HashToken("tgs_token-b"), now); got {
				t.Errorf("get of another token after %s = true; want false", tc.name)
			}
		})
	}
}
