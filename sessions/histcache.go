package sessions

import (
	"container/list"
	"sync"
)

// histCache keeps, per session, the decoded history this replica last read, so that a
// Snapshot asks Redis only for the entries appended since (see readScript) and decodes only
// those. A history entry never changes once committed (result tags live in the meta hash and
// are applied on every read), so entries are keyed by the session's creation time and the
// seq of the last entry held, not by version.
//
// Cached records are shared and never modified: read copies them before adding result tags.
// The cache is an LRU by session, bounded by the total number of entries it holds.
type histCache struct {
	mu      sync.Mutex
	max     int // entries; 0 disables the cache
	entries int
	lru     *list.List // of *histSlot, most recent first
	byID    map[string]*list.Element
}

// histSlot is the cached history of one session: recs hold seqs last-len(recs)+1 .. last.
type histSlot struct {
	id      string
	created int64
	last    int64
	recs    []CallRecord
}

func newHistCache(maxEntries int) *histCache {
	return &histCache{max: maxEntries, lru: list.New(), byID: map[string]*list.Element{}}
}

// get returns the cached history of session id, or ok false.
func (c *histCache) get(id string) (slot histSlot, ok bool) {
	if c.max <= 0 {
		return histSlot{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.byID[id]
	if !ok {
		return histSlot{}, false
	}
	c.lru.MoveToFront(el)
	return *el.Value.(*histSlot), true
}

// put stores the history of session id up to seq last, unless the cache already holds a
// later one of the same session.
func (c *histCache) put(id string, created, last int64, recs []CallRecord) {
	if c.max <= 0 || len(recs) > c.max {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byID[id]; ok {
		s := el.Value.(*histSlot)
		if s.created == created && s.last >= last {
			c.lru.MoveToFront(el)
			return
		}
		c.entries += len(recs) - len(s.recs)
		s.created, s.last, s.recs = created, last, recs
		c.lru.MoveToFront(el)
	} else {
		c.byID[id] = c.lru.PushFront(&histSlot{id: id, created: created, last: last, recs: recs})
		c.entries += len(recs)
	}
	for c.entries > c.max {
		el := c.lru.Back()
		s := el.Value.(*histSlot)
		c.lru.Remove(el)
		delete(c.byID, s.id)
		c.entries -= len(s.recs)
	}
}

// drop forgets session id (it ended, or its cached history could not be used).
func (c *histCache) drop(id string) {
	if c.max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byID[id]; ok {
		c.entries -= len(el.Value.(*histSlot).recs)
		c.lru.Remove(el)
		delete(c.byID, id)
	}
}
