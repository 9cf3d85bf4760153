package sessions

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// Options configure either store.
type Options struct {
	// Clock tells the time for expiry, idle timeouts and call times. Nil: the system clock.
	Clock Clock
	// Logger receives warnings (dropped events, index repairs). Nil: discard.
	Logger *slog.Logger
	// Grace is how long an ended session's record is kept after its expiry, so that the Reaper
	// can still report who it belonged to. Reads never admit a session past its expiry.
	// Zero: one minute.
	Grace time.Duration
	// EventBuffer is the channel size of each subscription. Zero: 256.
	EventBuffer int
	// AckTimeout bounds how long a revoke or freeze waits for the subscribed replicas to
	// confirm they stopped the session's calls (see Store.Ack). Zero: 250ms.
	AckTimeout time.Duration
	// ReplicaID names this replica in acknowledgements. Empty: a random id.
	ReplicaID string
}

func (o Options) withDefaults() Options {
	o.Clock = orSystem(o.Clock)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Grace <= 0 {
		o.Grace = time.Minute
	}
	if o.AckTimeout <= 0 {
		o.AckTimeout = 250 * time.Millisecond
	}
	if o.ReplicaID == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		o.ReplicaID = hex.EncodeToString(b[:])
	}
	if o.EventBuffer <= 0 {
		o.EventBuffer = 256
	}
	return o
}

// Memory is the Store for a single process: sessions live in a map and events fan out to
// in-process subscribers. It is the embedded default.
type Memory struct {
	opts Options

	mu       sync.Mutex
	sessions map[string]*memEntry
	locked   map[string]bool
	subs     map[chan Event]struct{}
	acks     map[ackKey]*ackWait // revokes and freezes waiting for subscribers
}

type ackKey struct {
	id      string
	version int64
}

// ackWait counts the confirmations one revoke or freeze still needs.
type ackWait struct {
	need int
	done chan struct{}
}

type memEntry struct {
	hash [32]byte
	s    *Session
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty in-memory store.
func NewMemory(opts Options) *Memory {
	return &Memory{
		opts:     opts.withDefaults(),
		sessions: make(map[string]*memEntry),
		locked:   make(map[string]bool),
		subs:     make(map[chan Event]struct{}),
		acks:     make(map[ackKey]*ackWait),
	}
}

// Ack implements Store.
func (m *Memory) Ack(ctx context.Context, ev Event) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if w := m.acks[ackKey{ev.SessionID, ev.Version}]; w != nil && w.need > 0 {
		if w.need--; w.need == 0 {
			close(w.done)
		}
	}
	return nil
}

// awaitAcks waits until the subscribers confirmed the ending change of session id at version,
// or the ack timeout passed.
func (m *Memory) awaitAcks(ctx context.Context, id string, version int64) {
	key := ackKey{id, version}
	m.mu.Lock()
	w := m.acks[key]
	m.mu.Unlock()
	if w == nil {
		return
	}
	t := time.NewTimer(m.opts.AckTimeout)
	defer t.Stop()
	select {
	case <-w.done:
	case <-t.C:
		m.opts.Logger.Warn("revoke acknowledged before every subscriber confirmed it", "session", id, "missing", w.need)
	case <-ctx.Done():
	}
	m.mu.Lock()
	delete(m.acks, key)
	m.mu.Unlock()
}

// Create implements Store.
func (m *Memory) Create(ctx context.Context, spec Spec) (*Session, string, error) {
	if err := spec.Validate(); err != nil {
		return nil, "", fmt.Errorf("create session: %w", err)
	}
	token, hash := specToken(spec)
	now := m.opts.Clock.Now()
	s := newSession(spec, IDFromHash(hash), now)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.locked[spec.Agent] {
		return nil, "", fmt.Errorf("create session for %q: %w", spec.Agent, ErrAgentLocked)
	}
	if old, ok := m.sessions[s.ID]; ok {
		m.refreshLocked(old.s, now)
		if old.s.State != StateExpired && now.Before(old.s.Expires) {
			return nil, "", fmt.Errorf("create session for %q: %w", spec.Agent, ErrTokenTaken)
		}
	}
	m.sessions[s.ID] = &memEntry{hash: hash, s: s}
	return copySession(s, true), token, nil
}

// newSession fills a new active session from spec, with times kept to the millisecond.
func newSession(spec Spec, id string, now time.Time) *Session {
	now = ms(now)
	limit := spec.HistoryLimit
	if limit == 0 {
		limit = DefaultHistoryLimit
	}
	return &Session{
		ID:           id,
		Agent:        spec.Agent,
		Profile:      spec.Profile,
		Labels:       slices.Clone(spec.Labels),
		Scope:        slices.Clone(spec.Scope),
		State:        StateActive,
		Created:      now,
		Expires:      now.Add(spec.Lifetime.Truncate(time.Millisecond)),
		IdleTimeout:  spec.IdleTimeout.Truncate(time.Millisecond),
		LastActivity: now,
		Budget:       spec.Budget,
		HistoryLimit: limit,
		Version:      1,
	}
}

// LookupToken implements Store.
func (m *Memory) LookupToken(ctx context.Context, hash [32]byte) (*Session, error) {
	id := IDFromHash(hash)
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.sessions[id]
	if !ok || subtle.ConstantTimeCompare(e.hash[:], hash[:]) != 1 {
		return nil, fmt.Errorf("look up token: %w", ErrNotFound)
	}
	return m.snapshotLocked(e, false)
}

// Snapshot implements Store.
func (m *Memory) Snapshot(ctx context.Context, id string) (*Session, error) {
	e, err := m.entryLocking(id)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	defer m.mu.Unlock()
	return m.snapshotLocked(e, true)
}

// Get implements Store.
func (m *Memory) Get(ctx context.Context, id string) (*Session, error) {
	e, err := m.entryLocking(id)
	if err != nil {
		return nil, fmt.Errorf("get session: %w", err)
	}
	defer m.mu.Unlock()
	s, _ := m.snapshotLocked(e, true)
	return s, nil
}

// entryLocking checks id, locks m and finds the session; on error m is unlocked again.
func (m *Memory) entryLocking(id string) (*memEntry, error) {
	if err := validID(id); err != nil {
		return nil, err
	}
	m.mu.Lock()
	e, ok := m.sessions[id]
	if !ok {
		m.mu.Unlock()
		return nil, fmt.Errorf("session %s: %w", id, ErrNotFound)
	}
	return e, nil
}

// snapshotLocked expires the session if its time has come and returns a copy, with a
// *StateError when it is not active.
func (m *Memory) snapshotLocked(e *memEntry, history bool) (*Session, error) {
	m.refreshLocked(e.s, m.opts.Clock.Now())
	s := copySession(e.s, history)
	if s.State != StateActive {
		return s, &StateError{ID: s.ID, State: s.State, Reason: s.Reason}
	}
	return s, nil
}

// refreshLocked turns a session whose expiry or idle timeout has passed into an expired one.
func (m *Memory) refreshLocked(s *Session, now time.Time) {
	reason := expiredReason(s, now)
	if reason == "" {
		return
	}
	s.State, s.Reason = StateExpired, reason
	s.Version++
	m.publishLocked(Event{SessionID: s.ID, Agent: s.Agent, Kind: EventExpired, Reason: reason, Version: s.Version})
}

// Commit implements Store.
func (m *Memory) Commit(ctx context.Context, id string, version int64, rec CallRecord, eff Effects) (*Session, error) {
	now := ms(m.opts.Clock.Now())
	rec, err := normalizeRecord(rec, now)
	if err == nil {
		err = validRemove(eff.Remove)
	}
	if err != nil {
		return nil, fmt.Errorf("commit call: %w", err)
	}
	e, err := m.entryLocking(id)
	if err != nil {
		return nil, fmt.Errorf("commit call: %w", err)
	}
	defer m.mu.Unlock()
	s := e.s
	m.refreshLocked(s, now)
	switch {
	case s.State != StateActive:
		return nil, fmt.Errorf("commit call: %w", &StateError{ID: id, State: s.State, Reason: s.Reason})
	case s.Version != version:
		return nil, fmt.Errorf("commit call on version %d, session is at %d: %w", version, s.Version, ErrConflict)
	case !eff.Denied && s.Budget > 0 && s.Calls >= s.Budget:
		return nil, fmt.Errorf("commit call: %d of %d calls used: %w", s.Calls, s.Budget, ErrBudget)
	}
	rec.Seq = s.Calls + s.Denied + 1
	s.History = append(s.History, rec)
	if over := len(s.History) - s.HistoryLimit; over > 0 {
		s.History = slices.Delete(s.History, 0, over)
	}
	s.LastActivity = now
	if eff.Denied {
		s.Denied++
	} else {
		s.Calls++
	}
	if eff.Risk != nil {
		s.Risk = *eff.Risk
	}
	s.Labels = addUnique(s.Labels, eff.AddLabels)
	if !eff.ExpireAt.IsZero() && eff.ExpireAt.Before(s.Expires) {
		s.Expires = ms(eff.ExpireAt)
	}
	if eff.Detect != nil {
		s.Detect = bytes.Clone(eff.Detect)
	}
	if n := len(s.Removed); len(eff.Remove) > 0 {
		if s.Removed = addUnique(s.Removed, eff.Remove); len(s.Removed) > n {
			m.publishLocked(Event{SessionID: id, Agent: s.Agent, Kind: EventNarrowed, Version: s.Version + 1})
		}
	}
	switch {
	case eff.Revoke:
		m.endLocked(s, StateRevoked, EventRevoked, eff.Reason)
	case eff.Freeze:
		m.endLocked(s, StateFrozen, EventFrozen, eff.Reason)
	}
	s.Version++
	out := copySession(s, false)
	if eff.Revoke || eff.Freeze {
		m.mu.Unlock()
		m.awaitAcks(ctx, out.ID, out.Version)
		m.mu.Lock() // the deferred Unlock
	}
	return out, nil
}

// Annotate implements Store.
func (m *Memory) Annotate(ctx context.Context, id string, version, seq int64, tags []string, detect []byte) error {
	e, err := m.entryLocking(id)
	if err != nil {
		return fmt.Errorf("annotate call: %w", err)
	}
	defer m.mu.Unlock()
	s := e.s
	if version != 0 && s.Version != version {
		return fmt.Errorf("annotate call on version %d, session is at %d: %w", version, s.Version, ErrConflict)
	}
	for i := len(s.History) - 1; i >= 0; i-- {
		if s.History[i].Seq == seq {
			s.History[i].ResultTags = addUnique(s.History[i].ResultTags, tags)
			break
		}
	}
	if detect != nil {
		s.Detect = bytes.Clone(detect)
	}
	s.Version++
	return nil
}

// endLocked moves s to state and publishes kind. The caller bumps the version right after;
// the event carries the version after the bump.
func (m *Memory) endLocked(s *Session, state State, kind EventKind, reason string) {
	s.State, s.Reason = state, reason
	m.publishLocked(Event{SessionID: s.ID, Agent: s.Agent, Kind: kind, Reason: reason, Version: s.Version + 1})
}

// Touch implements Store.
func (m *Memory) Touch(ctx context.Context, id string) (*Session, error) {
	return m.mutate(id, "touch", func(s *Session, now time.Time) error {
		if s.State != StateActive {
			return &StateError{ID: id, State: s.State, Reason: s.Reason}
		}
		s.LastActivity = now
		// Activity alone does not change what policy decides: no new version.
		return errNoBump
	})
}

// Narrow implements Store.
func (m *Memory) Narrow(ctx context.Context, id string, remove []string) (*Session, error) {
	if err := validRemove(remove); err != nil {
		return nil, fmt.Errorf("narrow: %w", err)
	}
	return m.mutate(id, "narrow", func(s *Session, now time.Time) error {
		if s.State != StateActive && s.State != StateFrozen {
			return &StateError{ID: id, State: s.State, Reason: s.Reason}
		}
		n := len(s.Removed)
		s.Removed = addUnique(s.Removed, remove)
		if len(s.Removed) == n {
			return errNoBump
		}
		m.publishLocked(Event{SessionID: id, Agent: s.Agent, Kind: EventNarrowed, Version: s.Version + 1})
		return nil
	})
}

// Freeze implements Store.
func (m *Memory) Freeze(ctx context.Context, id, reason string) (*Session, error) {
	return m.ending(ctx, id, "freeze", func(s *Session, now time.Time) error {
		switch s.State {
		case StateFrozen:
			return errNoBump
		case StateActive:
			m.endLocked(s, StateFrozen, EventFrozen, reason)
			return nil
		}
		return &StateError{ID: id, State: s.State, Reason: s.Reason}
	})
}

// Resume implements Store.
func (m *Memory) Resume(ctx context.Context, id string) (*Session, error) {
	return m.mutate(id, "resume", func(s *Session, now time.Time) error {
		if s.State != StateFrozen {
			return &StateError{ID: id, State: s.State, Reason: s.Reason}
		}
		// Time spent frozen does not count as idle time.
		s.LastActivity = now
		m.endLocked(s, StateActive, EventResumed, "")
		return nil
	})
}

// Revoke implements Store.
func (m *Memory) Revoke(ctx context.Context, id, reason string) (*Session, error) {
	return m.ending(ctx, id, "revoke", func(s *Session, now time.Time) error {
		if s.State == StateRevoked || s.State == StateExpired {
			return errNoBump
		}
		m.endLocked(s, StateRevoked, EventRevoked, reason)
		return nil
	})
}

// errNoBump tells mutate that the operation changed nothing policy reads: no new version.
var errNoBump = fmt.Errorf("unchanged")

// mutate runs f on the session (expired first if its time has come) and bumps the version
// when f changed it.
// ending is mutate for a revoke or freeze: it returns once the subscribers confirmed it.
func (m *Memory) ending(ctx context.Context, id, step string, f func(s *Session, now time.Time) error) (*Session, error) {
	s, err := m.mutate(id, step, f)
	if err == nil {
		m.awaitAcks(ctx, s.ID, s.Version)
	}
	return s, err
}

func (m *Memory) mutate(id, step string, f func(s *Session, now time.Time) error) (*Session, error) {
	now := ms(m.opts.Clock.Now())
	e, err := m.entryLocking(id)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", step, err)
	}
	defer m.mu.Unlock()
	m.refreshLocked(e.s, now)
	switch err := f(e.s, now); err {
	case nil:
		e.s.Version++
	case errNoBump:
	default:
		return nil, fmt.Errorf("%s: %w", step, err)
	}
	return copySession(e.s, false), nil
}

// RevokeAgent implements Store.
func (m *Memory) RevokeAgent(ctx context.Context, agent, reason string) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.opts.Clock.Now()
	n := 0
	var ended []ackKey
	for _, e := range m.sessions {
		s := e.s
		if s.Agent != agent {
			continue
		}
		m.refreshLocked(s, now)
		if s.State == StateActive || s.State == StateFrozen {
			m.endLocked(s, StateRevoked, EventRevoked, reason)
			s.Version++
			n++
			ended = append(ended, ackKey{s.ID, s.Version})
		}
	}
	m.mu.Unlock()
	for _, k := range ended {
		m.awaitAcks(ctx, k.id, k.version)
	}
	m.mu.Lock() // the deferred Unlock
	return n, nil
}

// LockAgent implements Store.
func (m *Memory) LockAgent(ctx context.Context, agent string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.locked[agent] = true
	return nil
}

// UnlockAgent implements Store.
func (m *Memory) UnlockAgent(ctx context.Context, agent string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.locked, agent)
	return nil
}

// AgentLocked implements Store.
func (m *Memory) AgentLocked(ctx context.Context, agent string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.locked[agent], nil
}

// List implements Store.
func (m *Memory) List(ctx context.Context, opts ListOptions) (Page, error) {
	if opts.State != "" && !opts.State.Valid() {
		return Page{}, fmt.Errorf("list sessions: %w: state %q: want one of %v", ErrInvalid, opts.State, States)
	}
	agentWalk := opts.Agent != ""
	cur, err := parseListCursor(opts.Cursor, agentWalk)
	if err != nil {
		return Page{}, fmt.Errorf("list sessions: %w", err)
	}
	limit := clip(opts.Limit)
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.opts.Clock.Now()
	var all []*Session
	for _, e := range m.sessions {
		m.refreshLocked(e.s, now)
		s := e.s
		if (opts.Agent != "" && s.Agent != opts.Agent) || (opts.State != "" && s.State != opts.State) {
			continue
		}
		if opts.Cursor != "" && listKey(s, agentWalk).compare(cur) <= 0 {
			continue
		}
		all = append(all, s)
	}
	slices.SortFunc(all, func(a, b *Session) int { return listKey(a, agentWalk).compare(listKey(b, agentWalk)) })
	var p Page
	for _, s := range all {
		if len(p.Sessions) == limit {
			p.Next = nextCursor(p.Sessions[len(p.Sessions)-1], agentWalk)
			break
		}
		p.Sessions = append(p.Sessions, copySession(s, false))
	}
	return p, nil
}

// Subscribe implements Store.
func (m *Memory) Subscribe(ctx context.Context) (<-chan Event, error) {
	ch := make(chan Event, m.opts.EventBuffer)
	m.mu.Lock()
	m.subs[ch] = struct{}{}
	m.mu.Unlock()
	context.AfterFunc(ctx, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		delete(m.subs, ch)
		close(ch)
	})
	return ch, nil
}

// publishLocked hands ev to every subscriber without blocking the store.
func (m *Memory) publishLocked(ev Event) {
	if ev.needsAck() && len(m.subs) > 0 {
		m.acks[ackKey{ev.SessionID, ev.Version}] = &ackWait{need: len(m.subs), done: make(chan struct{})}
	}
	for ch := range m.subs {
		select {
		case ch <- ev:
		default:
			m.opts.Logger.Warn("session event dropped: subscriber too slow", "session", ev.SessionID, "kind", ev.Kind)
		}
	}
}

// Reap implements Store: it expires sessions whose expiry passed and forgets those whose
// grace passed too.
func (m *Memory) Reap(ctx context.Context) (time.Time, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.opts.Clock.Now()
	var next time.Time
	for id, e := range m.sessions {
		m.refreshLocked(e.s, now)
		if !now.Before(e.s.Expires.Add(m.opts.Grace)) {
			delete(m.sessions, id)
			continue
		}
		if e.s.State == StateActive || e.s.State == StateFrozen {
			if next.IsZero() || e.s.Expires.Before(next) {
				next = e.s.Expires
			}
		}
	}
	return next, nil
}

// copySession returns a deep copy of s, with or without its history.
func copySession(s *Session, history bool) *Session {
	c := *s
	c.Labels = slices.Clone(s.Labels)
	c.Scope = slices.Clone(s.Scope)
	c.Removed = slices.Clone(s.Removed)
	c.Detect = bytes.Clone(s.Detect)
	c.History = nil
	if history && len(s.History) > 0 {
		c.History = make([]CallRecord, len(s.History))
		for i, r := range s.History {
			r.Args = bytes.Clone(r.Args)
			r.Labels = slices.Clone(r.Labels)
			r.Rules = slices.Clone(r.Rules)
			r.ResultTags = slices.Clone(r.ResultTags)
			c.History[i] = r
		}
	}
	return &c
}

// normalizeRecord checks a call record and puts it in the form every store keeps.
func normalizeRecord(rec CallRecord, now time.Time) (CallRecord, error) {
	if rec.Name == "" {
		return rec, fmt.Errorf("%w: call record has no name: set the namespaced tool name", ErrInvalid)
	}
	if len(rec.Args) > 0 {
		// Sized to the arguments, which compacting only shortens: the record stays in the
		// replica's history cache, and a bytes.Buffer would round small arguments up to 64
		// bytes (most are a path or a query of a few dozen).
		b := bytes.NewBuffer(make([]byte, 0, len(rec.Args)))
		if err := json.Compact(b, rec.Args); err != nil {
			return rec, fmt.Errorf("%w: call record args of %s are not JSON: %v", ErrInvalid, rec.Name, err)
		}
		rec.Args = b.Bytes()
		if string(rec.Args) == "null" {
			rec.Args = nil
		}
	}
	if rec.Time.IsZero() {
		rec.Time = now
	}
	rec.Time = ms(rec.Time)
	rec.Labels = slices.Clone(rec.Labels)
	rec.Rules = slices.Clone(rec.Rules)
	rec.ResultTags = slices.Clone(rec.ResultTags)
	return rec, nil
}
