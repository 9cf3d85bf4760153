package gateway

import (
	"bytes"
	"sync"

	"github.com/toolgate/toolgate/policies"
)

// detectCache keeps, per session, the detectors' state this replica last
// encoded, decoded: the next call of the session usually finds the same
// bytes in the store and need not decode them again (a busy session's
// state is kilobytes). An entry is used only when the session's bytes are
// exactly those it was made from, and is taken out while a caller changes
// it, so two calls never share one state.
type detectCache struct {
	mu      sync.Mutex
	entries map[string]detectEntry
	max     int
}

type detectEntry struct {
	raw   []byte // the encoded state, as committed
	state *policies.DetectState
}

// maxDetectCache bounds the sessions whose state a replica keeps decoded.
const maxDetectCache = 1024

// take returns the decoded state of raw for the session and forgets it,
// or nil when the cache holds no state of exactly these bytes.
func (c *detectCache) take(id string, raw []byte) *policies.DetectState {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[id]
	if !ok {
		return nil
	}
	delete(c.entries, id)
	if !bytes.Equal(e.raw, raw) {
		return nil
	}
	return e.state
}

// put keeps st as the decoded form of raw, which the session now holds.
// The caller must not change st afterwards.
func (c *detectCache) put(id string, raw []byte, st *policies.DetectState) {
	if st == nil || raw == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = map[string]detectEntry{}
	}
	limit := c.max
	if limit <= 0 {
		limit = maxDetectCache
	}
	if _, ok := c.entries[id]; !ok && len(c.entries) >= limit {
		for k := range c.entries { // drop one at random
			delete(c.entries, k)
			break
		}
	}
	c.entries[id] = detectEntry{raw: raw, state: st}
}

// drop forgets the session's state.
func (c *detectCache) drop(id string) {
	c.mu.Lock()
	delete(c.entries, id)
	c.mu.Unlock()
}
