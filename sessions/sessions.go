// Package sessions keeps toolgate's live agent sessions, so that every replica admits tool calls
// against the same state and sees a revoke at once.
package sessions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// State is where a session is in its life. Only an active session admits calls.
type State string

// The states of a session. Frozen can go back to active; revoked and expired are final.
const (
	StateActive  State = "active"
	StateFrozen  State = "frozen"
	StateRevoked State = "revoked"
	StateExpired State = "expired"
)

// States lists every state, in the order List walks them when no state is asked for.
var States = []State{StateActive, StateFrozen, StateRevoked, StateExpired}

// Valid reports whether s is one of the four states.
func (s State) Valid() bool {
	switch s {
	case StateActive, StateFrozen, StateRevoked, StateExpired:
		return true
	}
	return false
}

// DefaultHistoryLimit is how many earlier calls a session keeps when Spec.HistoryLimit is zero.
const DefaultHistoryLimit = 256

// Errors returned by every Store. Test them with errors.Is.
var (
	// ErrNotFound: no session has that id or token (or it ended so long ago that it was deleted).
	ErrNotFound = errors.New("sessions: no such session")
	// ErrConflict: the session changed since the snapshot; take a new Snapshot and decide again.
	ErrConflict = errors.New("sessions: session changed since snapshot")
	// ErrBudget: the session has used its whole call budget.
	ErrBudget = errors.New("sessions: call budget exhausted")
	// ErrNotActive: the session is frozen, revoked or expired. The error is a *StateError.
	ErrNotActive = errors.New("sessions: session not active")
	// ErrAgentLocked: the agent is locked and may not open sessions.
	ErrAgentLocked = errors.New("sessions: agent locked")
	// ErrUnavailable: the store could not be reached. Refuse the call with a retryable error;
	// nothing may be admitted without reading the store.
	ErrUnavailable = errors.New("sessions: store unavailable")
	// ErrTokenTaken: Spec.Token belongs to a session that has not expired yet (it may be
	// active, frozen or revoked). Look it up instead.
	ErrTokenTaken = errors.New("sessions: token already in use")
	// ErrInvalid: the caller passed something malformed; the message says what to fix.
	ErrInvalid = errors.New("sessions: invalid input")
)

// StateError reports that an operation needs a state the session is not in.
// errors.Is(err, ErrNotActive) holds for it.
type StateError struct {
	ID     string
	State  State
	Reason string
}

func (e *StateError) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("session %s is %s: %s", e.ID, e.State, e.Reason)
	}
	return fmt.Sprintf("session %s is %s", e.ID, e.State)
}

// Is makes errors.Is(err, ErrNotActive) true for every StateError.
func (e *StateError) Is(target error) bool { return target == ErrNotActive }

// Spec is what a new session is made from, usually filled from the agent's profile.
type Spec struct {
	// Agent is the identity the session belongs to. Required.
	Agent string `yaml:"agent"`
	// Profile names the profile the session was opened with (informational).
	Profile string `yaml:"profile"`
	// Labels are free-form marks policies can read (for example "ci", "tainted").
	Labels []string `yaml:"labels"`
	// Scope lists the namespaced tool names the session may call; `*` matches any run of
	// characters ("files__read_*"). Required: use ["*"] to allow every tool.
	Scope []string `yaml:"scope"`
	// Lifetime is the absolute lifetime from creation. Required.
	Lifetime time.Duration `yaml:"lifetime"`
	// IdleTimeout ends the session when no call or Touch came for that long. Zero: no idle limit.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// Budget is the most calls the session may make. Zero: no limit.
	Budget int64 `yaml:"budget"`
	// HistoryLimit bounds the kept history. Zero: DefaultHistoryLimit.
	HistoryLimit int `yaml:"history_limit"`
	// Token, when set, is the session's bearer token instead of a random one: for a session
	// that must be found again from something the caller holds (the implicit session of an
	// agent credential). It must be hard to guess; Create fails with ErrTokenTaken while
	// another session with that token has not passed its expiry.
	Token string `yaml:"-"`
}

// Validate reports the first problem with the spec, phrased as what to change.
func (s Spec) Validate() error {
	switch {
	case strings.TrimSpace(s.Agent) == "":
		return fmt.Errorf("%w: agent is empty: set the agent id the session belongs to", ErrInvalid)
	case len(s.Scope) == 0:
		return fmt.Errorf("%w: scope is empty: list the tools the session may call, or [\"*\"] for all", ErrInvalid)
	case s.Lifetime <= 0:
		return fmt.Errorf("%w: lifetime is %v: set a positive duration such as 1h", ErrInvalid, s.Lifetime)
	case s.IdleTimeout < 0:
		return fmt.Errorf("%w: idle_timeout is %v: set a positive duration, or 0 for no idle limit", ErrInvalid, s.IdleTimeout)
	case s.Budget < 0:
		return fmt.Errorf("%w: budget is %d: set a positive number of calls, or 0 for no limit", ErrInvalid, s.Budget)
	case s.HistoryLimit < 0 || s.HistoryLimit > 10000:
		return fmt.Errorf("%w: history_limit is %d: set 1..10000, or 0 for %d", ErrInvalid, s.HistoryLimit, DefaultHistoryLimit)
	}
	if s.Token != "" && len(s.Token) < 32 {
		return fmt.Errorf("%w: token is %d characters: a chosen token needs at least 32 unguessable characters", ErrInvalid, len(s.Token))
	}
	for i, g := range s.Scope {
		if g == "" {
			return fmt.Errorf("%w: scope[%d] is empty: remove it or write a tool name or glob", ErrInvalid, i)
		}
	}
	return nil
}

// CallRecord is one earlier call in a session's history.
type CallRecord struct {
	// Seq numbers the calls of a session from 1; the store assigns it at Commit.
	Seq int64 `json:"seq"`
	// Server is the upstream server's namespace, Tool the tool's own name, and Name the
	// namespaced name the agent used ("files__read_file").
	Server string `json:"server"`
	Tool   string `json:"tool"`
	Name   string `json:"name"`
	// Args are the call's arguments as JSON. The store keeps them compacted (whitespace removed).
	Args json.RawMessage `json:"args,omitempty"`
	// Labels are the tool's labels (for example "private_data", "external_send").
	Labels []string `json:"labels,omitempty"`
	// Decision is what policy decided ("allow", "deny", ...). Free-form for the store.
	Decision string `json:"decision"`
	// Rules are the ids of the rules that decided.
	Rules []string `json:"rules,omitempty"`
	// Time is when the call was admitted, kept to the millisecond. Zero at Commit: the store's now.
	Time time.Time `json:"time"`
	// ResultTags are marks found in the result (for example taint fingerprints).
	ResultTags []string `json:"result_tags,omitempty"`
}

// Session is toolgate's own session object. Values returned by a Store are copies: editing
// one changes nothing in the store.
type Session struct {
	ID      string   `json:"id"`
	Agent   string   `json:"agent"`
	Profile string   `json:"profile,omitempty"`
	Labels  []string `json:"labels,omitempty"`
	// Scope and Removed together say what may be called: see Allowed.
	Scope   []string `json:"scope"`
	Removed []string `json:"removed,omitempty"`
	State   State    `json:"state"`
	// Reason says why the session was frozen, revoked or expired.
	Reason       string        `json:"reason,omitempty"`
	Created      time.Time     `json:"created"`
	Expires      time.Time     `json:"expires"`
	IdleTimeout  time.Duration `json:"idle_timeout,omitempty"`
	LastActivity time.Time     `json:"last_activity"`
	Budget       int64         `json:"budget,omitempty"`
	// Calls counts committed calls that were not denied; Denied counts denied ones.
	Calls  int64   `json:"calls"`
	Denied int64   `json:"denied"`
	Risk   float64 `json:"risk"`
	// History holds the most recent calls, oldest first, at most HistoryLimit of them.
	History      []CallRecord `json:"history,omitempty"`
	HistoryLimit int          `json:"history_limit"`
	// Version changes on every change of the session; Commit compares it.
	Version int64 `json:"version"`
	// Detect is the call-chain detectors' state, opaque to the store (see Effects.Detect).
	Detect []byte `json:"detect,omitempty"`
}

// Allowed reports whether the session's scope lets it call the namespaced tool name: the name
// matches a scope entry and no removal.
func (s *Session) Allowed(name string) bool {
	return matchAny(s.Scope, name) && !matchAny(s.Removed, name)
}

func matchAny(globs []string, name string) bool {
	for _, g := range globs {
		if Match(g, name) {
			return true
		}
	}
	return false
}

// Match reports whether name matches glob, in which `*` stands for any run of characters
// (including none) and every other character for itself.
func Match(glob, name string) bool {
	parts := strings.Split(glob, "*")
	if len(parts) == 1 {
		return glob == name
	}
	if !strings.HasPrefix(name, parts[0]) {
		return false
	}
	name = name[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(name, p)
		if i < 0 {
			return false
		}
		name = name[i+len(p):]
	}
	return len(name) >= len(last) && strings.HasSuffix(name, last)
}

// Effects are the changes a Commit makes besides recording the call.
type Effects struct {
	// Denied marks a refused call: it counts in Denied instead of Calls and the budget does
	// not apply to it. The zero value counts the call against the budget.
	Denied bool
	// Risk, when not nil, becomes the session's risk.
	Risk *float64
	// Remove narrows the scope: globs or exact names that may no longer be called.
	Remove []string
	// AddLabels adds labels to the session (for example a taint mark).
	AddLabels []string
	// Freeze or Revoke the session, with Reason. Revoke wins if both are set.
	Freeze bool
	Revoke bool
	Reason string
	// ExpireAt, when not zero and earlier than the session's expiry, becomes its expiry (for
	// example the end of a time window a policy allows).
	ExpireAt time.Time
	// Detect, when not nil, replaces the detectors' state.
	Detect []byte
}

// EventKind says what happened to a session.
type EventKind string

// The kinds of events a Store publishes.
const (
	EventRevoked  EventKind = "revoked"
	EventFrozen   EventKind = "frozen"
	EventNarrowed EventKind = "narrowed"
	EventResumed  EventKind = "resumed"
	EventExpired  EventKind = "expired"
)

// Event tells subscribers on every replica that a session changed.
type Event struct {
	SessionID string    `json:"id"`
	Agent     string    `json:"agent,omitempty"`
	Kind      EventKind `json:"kind"`
	Reason    string    `json:"reason,omitempty"`
	// Version is the session's version after the change.
	Version int64 `json:"v,omitempty"`
}

// needsAck reports whether the change that published ev waits for the
// subscribers' Ack: a revoke or a freeze, which must stop the session's
// calls everywhere before it is acknowledged.
func (ev Event) needsAck() bool { return ev.Kind == EventRevoked || ev.Kind == EventFrozen }

// ListOptions filter and page List.
type ListOptions struct {
	// Agent and State, when set, keep only matching sessions.
	Agent string
	State State
	// Limit bounds the page; zero or more than 1000 means 1000.
	Limit int
	// Cursor continues from a previous Page.Next.
	Cursor string
}

// Page is one page of List. Sessions carry no history.
type Page struct {
	Sessions []*Session
	// Next is the cursor of the next page, or "" after the last one.
	Next string
}

const maxListLimit = 1000

// Store keeps sessions. Memory and Redis implement it and pass the same contract tests
// (package sessionstest).
//
// Reading a session also ends it when its expiry or idle timeout has passed (by the store's
// Clock): the session turns expired, its version changes and an expired event is published.
// Every state change publishes an Event. Errors caused by an unreachable store wrap
// ErrUnavailable.
type Store interface {
	// Create opens a session for spec and returns it with its bearer token. The token is given
	// out only here; the store keeps its SHA-256 hash. ErrAgentLocked if the agent is locked.
	Create(ctx context.Context, spec Spec) (sess *Session, token string, err error)
	// LookupToken finds the session of a token hash (see HashToken) and returns it without
	// its history (authentication needs its state and scope, not its calls); like Snapshot,
	// a session that is not active comes with a *StateError.
	LookupToken(ctx context.Context, hash [32]byte) (*Session, error)
	// Snapshot returns one consistent view of the session, history included. When the
	// session is not active it returns the session and a *StateError.
	Snapshot(ctx context.Context, id string) (*Session, error)
	// Commit records a call decided on the snapshot with the given version, and applies its
	// effects, atomically and only if the version is unchanged (else ErrConflict: take a new
	// Snapshot). It fails with a *StateError when the session is not active, and with ErrBudget
	// when an undenied call would exceed the budget. The returned session has no history.
	Commit(ctx context.Context, id string, version int64, rec CallRecord, eff Effects) (*Session, error)
	// Touch marks activity without a call, to keep an idle timeout from ending the session.
	Touch(ctx context.Context, id string) (*Session, error)
	// Annotate adds result tags to the call seq (once its result is known) and, when detect is
	// not nil, replaces the detectors' state, in any state of the session, if the session is
	// still at version (0: at any version; else ErrConflict). It changes the version: a
	// decision taken before it is taken again. A call no longer in the history only gets the
	// detector state.
	Annotate(ctx context.Context, id string, version, seq int64, tags []string, detect []byte) error

	// Get returns the session in whatever state, history included.
	Get(ctx context.Context, id string) (*Session, error)
	// List returns sessions by id order, filtered and paged by opts.
	List(ctx context.Context, opts ListOptions) (Page, error)
	// Narrow removes tools from an active or frozen session.
	Narrow(ctx context.Context, id string, remove []string) (*Session, error)
	// Freeze stops an active session from admitting calls until Resume. Freezing a frozen
	// session changes nothing.
	Freeze(ctx context.Context, id, reason string) (*Session, error)
	// Resume makes a frozen session active again; any other state is a *StateError.
	Resume(ctx context.Context, id string) (*Session, error)
	// Revoke ends the session for good. Its token stays rejected until the session's
	// original expiry. Revoking a revoked or expired session changes nothing.
	Revoke(ctx context.Context, id, reason string) (*Session, error)
	// RevokeAgent revokes every live session of agent and returns how many it revoked.
	RevokeAgent(ctx context.Context, agent, reason string) (int, error)
	// LockAgent stops agent from opening sessions until UnlockAgent. Open sessions go on.
	LockAgent(ctx context.Context, agent string) error
	UnlockAgent(ctx context.Context, agent string) error
	AgentLocked(ctx context.Context, agent string) (bool, error)

	// Subscribe delivers the events of every replica from now until ctx ends, then closes the
	// channel. A subscriber that falls far behind loses events: the store stays the truth.
	Subscribe(ctx context.Context) (<-chan Event, error)
	// Ack confirms a revoked or frozen event: this replica has stopped the session's calls.
	// Revoke, Freeze, RevokeAgent and a Commit that revokes or freezes return only once every
	// subscribed replica has confirmed, or Options.AckTimeout has passed (a replica that died
	// must not hold a revoke up), so that when they return no replica is still forwarding a
	// call of that session.
	Ack(ctx context.Context, ev Event) error
	// Reap expires every session whose expiry has passed, publishing expired events, and
	// returns the next expiry it knows of (zero if none). Reaper calls it on a timer.
	Reap(ctx context.Context) (next time.Time, err error)
}

// specToken is the token and hash a new session of spec gets.
func specToken(spec Spec) (string, [32]byte) {
	if spec.Token != "" {
		return spec.Token, HashToken(spec.Token)
	}
	return NewToken()
}

// validID rejects ids that could not have come from Create, before they reach a key name.
func validID(id string) error {
	if len(id) != idLen {
		return fmt.Errorf("%w: session id %q: want the %d-character id Create returned", ErrInvalid, id, idLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return fmt.Errorf("%w: session id %q: want lowercase hex", ErrInvalid, id)
		}
	}
	return nil
}

func validRemove(remove []string) error {
	for i, g := range remove {
		if g == "" {
			return fmt.Errorf("%w: remove[%d] is empty: give a tool name or glob", ErrInvalid, i)
		}
	}
	return nil
}

// Reasons given to sessions that expired.
const (
	reasonLifetime = "lifetime ended"
	reasonIdle     = "idle timeout"
)

// expiredReason says why an active or frozen session has ended by now, or "". Idle time
// counts only while the session is active: a frozen session waits for an operator.
func expiredReason(s *Session, now time.Time) string {
	if s.State != StateActive && s.State != StateFrozen {
		return ""
	}
	if !now.Before(s.Expires) {
		return reasonLifetime
	}
	if s.State == StateActive && s.IdleTimeout > 0 && now.Sub(s.LastActivity) >= s.IdleTimeout {
		return reasonIdle
	}
	return ""
}

// addUnique appends the strings of add that dst does not hold yet.
func addUnique(dst, add []string) []string {
	for _, a := range add {
		found := false
		for _, d := range dst {
			if d == a {
				found = true
				break
			}
		}
		if !found {
			dst = append(dst, a)
		}
	}
	return dst
}

func clip(limit int) int {
	if limit <= 0 || limit > maxListLimit {
		return maxListLimit
	}
	return limit
}

// ms rounds t down to the millisecond, the precision every store keeps.
func ms(t time.Time) time.Time { return time.UnixMilli(t.UnixMilli()) }
