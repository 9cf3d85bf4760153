package sessions

import (
	"container/list"
	"slices"
	"sync"
)

// histCache keeps, per session, the decoded history this replica last read, so that a
// Snapshot asks Redis only for the entries appended since (see readScript) and decodes only
// those. A history entry never changes once committed, so entries are keyed by the session's
// creation time and the seq of the last entry held, not by version. Result tags, which live
// in the meta hash, only grow: the cached records carry those known when they were stored,
// and every read adds the current ones.
//
// A slot may also hold the session's view: its fields at one version, which with the cached
// records make up the whole session as a Snapshot would return it. A read sets the view; this
// replica's own commits and annotations move it on, from their answers, without reading (see
// Redis.Recent).
//
// Cached records, views and tag lists are shared and never modified: a change builds new ones.
// Records are only ever appended past the end of the slot's own recs (see committed), which no
// reader holds. The cache is an LRU by session, bounded by the total number of entries it holds.
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
	// view, when not nil, is the session at view.Version without its history, which is recs
	// (with their result tags as of that version); then view.Calls+view.Denied == last.
	view *Session
	// skip is how many more times recent refuses the view: a commit decided on it conflicted,
	// so other replicas change the session too and the view is often behind.
	skip int
}

// viewBackoff is how many calls of a session decide on a Snapshot again after a decision on
// the cached view conflicted. Sessions whose calls alternate between replicas then pay a
// wasted commit once in viewBackoff calls, not on every call.
const viewBackoff = 8

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

// put stores the history of session id up to seq last, and view (which may be nil), unless
// the cache already holds a later one of the same session.
func (c *histCache) put(id string, created, last int64, recs []CallRecord, view *Session) {
	if c.max <= 0 || len(recs) > c.max {
		return
	}
	// No spare capacity: committed appends in place only to slices it made itself.
	recs = slices.Clip(recs)
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byID[id]; ok {
		s := el.Value.(*histSlot)
		c.lru.MoveToFront(el)
		if s.created == created && s.last > last {
			return
		}
		if s.created == created && s.last == last {
			if s.view != nil && view != nil && s.view.Version > view.Version {
				return // the same entries, and a later view of them
			}
			if len(s.recs) == len(recs) && (len(recs) == 0 || &s.recs[0] == &recs[0]) {
				s.view = view // the very records: keep them, with their room to grow
				return
			}
		}
		if s.created != created {
			s.skip = 0
		}
		c.entries += len(recs) - len(s.recs)
		s.created, s.last, s.recs, s.view = created, last, recs, view
	} else {
		c.byID[id] = c.lru.PushFront(&histSlot{id: id, created: created, last: last, recs: recs, view: view})
		c.entries += len(recs)
	}
	c.evict()
}

func (c *histCache) evict() {
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

// dropView forgets the view of session id if it is older than version (0: any view).
func (c *histCache) dropView(id string, version int64) {
	if c.max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byID[id]; ok {
		if s := el.Value.(*histSlot); s.view != nil && (version == 0 || s.view.Version < version) {
			s.view = nil
		}
	}
}

// recent returns the view of session id and its history, both shared, or ok false when there
// is none or the view is being skipped.
func (c *histCache) recent(id string) (view *Session, recs []CallRecord, ok bool) {
	if c.max <= 0 {
		return nil, nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.byID[id]
	if !ok {
		return nil, nil, false
	}
	s := el.Value.(*histSlot)
	if s.skip > 0 {
		s.skip--
		return nil, nil, false
	}
	if s.view == nil {
		return nil, nil, false
	}
	c.lru.MoveToFront(el)
	return s.view, s.recs, true
}

// viewCreated returns the creation time of session id if the cache holds its view at version.
func (c *histCache) viewCreated(id string, version int64) (int64, bool) {
	if c.max <= 0 {
		return 0, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byID[id]; ok {
		if s := el.Value.(*histSlot); s.view != nil && s.view.Version == version {
			return s.created, true
		}
	}
	return 0, false
}

// conflicted notes that a commit on version of session id found the session changed: a view
// at that version is stale, and the next few calls skip the view.
func (c *histCache) conflicted(id string, version int64) {
	if c.max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byID[id]; ok {
		if s := el.Value.(*histSlot); s.view != nil && s.view.Version == version {
			s.view, s.skip = nil, viewBackoff
		}
	}
}

// committed moves the view of session id on by a commit made on version: rec (with its seq)
// joins the history, kept to limit entries, and after (the session after the commit, without
// history, owned by the cache from now on) becomes the view. Without a view at version the
// commit cannot be applied: a view older than after is dropped.
func (c *histCache) committed(id string, version int64, rec CallRecord, after *Session) {
	if c.max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.byID[id]
	if !ok {
		return
	}
	s := el.Value.(*histSlot)
	if s.view == nil || s.view.Version != version || s.created != after.Created.UnixMilli() || s.last+1 != rec.Seq {
		if s.view != nil && s.view.Version < after.Version {
			s.view = nil
		}
		return
	}
	limit := max(after.HistoryLimit, 1)
	n := len(s.recs)
	if n > 0 {
		shareWithPrevious(&rec, &s.recs[n-1])
	}
	if n == cap(s.recs) {
		// The elements past len(s.recs) belong to no slice handed out.
		keep := min(n, limit-1)
		grown := make([]CallRecord, keep, recsCap(limit, keep+1))
		copy(grown, s.recs[n-keep:])
		s.recs = grown
	}
	s.recs = append(s.recs, rec)
	if over := len(s.recs) - limit; over > 0 {
		s.recs = s.recs[over:]
	}
	c.entries += len(s.recs) - n
	s.last, s.view = rec.Seq, after
	c.lru.MoveToFront(el)
	c.evict()
}

// shareWithPrevious makes rec use the strings and lists of prev, the record cached before it,
// where they are equal, as decodeEntry does (see entryMemo): a session mostly repeats the same
// few tools, and the copies a commit made of them would otherwise stay in the cache for as
// long as the record does. Result tags, which annotations add to, are not shared.
func shareWithPrevious(rec, prev *CallRecord) {
	for _, p := range [...]struct{ s, prev *string }{{&rec.Server, &prev.Server}, {&rec.Tool, &prev.Tool}, {&rec.Name, &prev.Name}, {&rec.Decision, &prev.Decision}} {
		if *p.s == *p.prev {
			*p.s = *p.prev
		}
	}
	if len(rec.Labels) > 0 && slices.Equal(rec.Labels, prev.Labels) {
		rec.Labels = prev.Labels
	}
	if len(rec.Rules) > 0 && slices.Equal(rec.Rules, prev.Rules) {
		rec.Rules = prev.Rules
	}
}

// recsCap is the capacity to give cached records that will hold n of a history limited to
// limit: room for the next commits too, so that most append in place. A history still short
// of its limit doubles, as append would: a session's cache costs what it holds, not its limit
// (a CallRecord is 192 bytes). Once full, a history is copied again after limit/4 commits
// (at least 16): four records' worth of copying per commit, for a quarter of the limit spare.
func recsCap(limit, n int) int {
	full := limit + max(16, limit/4)
	if n >= limit {
		return max(n, full)
	}
	return min(max(2*n, 16), full)
}

// annotated moves the view of session id on by an annotation made on version, which left the
// session at newVersion in state: tags join the result tags of call seq, and detect, when not
// nil, replaces the detector state. Without a view at version, a view older than newVersion is
// dropped.
func (c *histCache) annotated(id string, version, newVersion, seq int64, tags []string, detect []byte, state State) {
	if c.max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.byID[id]
	if !ok {
		return
	}
	s := el.Value.(*histSlot)
	if s.view == nil || s.view.Version != version || version == 0 || state != s.view.State {
		if s.view != nil && s.view.Version < newVersion {
			s.view = nil
		}
		return
	}
	v := *s.view
	v.Version = newVersion
	if detect != nil {
		v.Detect = slices.Clone(detect)
	}
	if first := s.last - int64(len(s.recs)) + 1; len(tags) > 0 && seq >= first && seq <= s.last {
		i := int(seq - first)
		// As merge in annotateScript does; Clip makes addUnique copy before it appends.
		if t := addUnique(slices.Clip(s.recs[i].ResultTags), tags); len(t) > len(s.recs[i].ResultTags) {
			// Readers hold the records: change a copy.
			recs := make([]CallRecord, len(s.recs), recsCap(v.HistoryLimit, len(s.recs)))
			copy(recs, s.recs)
			recs[i].ResultTags = t
			s.recs = recs
		}
	}
	s.view = &v
}
