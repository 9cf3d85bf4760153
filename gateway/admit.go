package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/toolgate/toolgate/internal/telemetry"
	"github.com/toolgate/toolgate/policies"
	"github.com/toolgate/toolgate/sessions"
	"github.com/toolgate/toolgate/tools"
)

// Policy decides tool calls; *policies.Engine implements it.
type Policy interface {
	Decide(*policies.Input) policies.Decision
}

var _ Policy = (*policies.Engine)(nil)

// noRules is the policy when none is configured: an empty rule set, which
// refuses calls outside the scope and allows the rest.
var noRules = func() *policies.Set {
	set, err := policies.Compile(nil, policies.Options{})
	if err != nil {
		panic("toolgate: compiling the empty policy set: " + err.Error())
	}
	return set
}()

// labelPrefix marks a label removal in a session's Removed list; tool
// names never hold a colon, so it cannot match one.
const labelPrefix = "label:"

// recentViews is a store that keeps each session's view as this replica
// last knew it, so that a call can be decided without reading the store
// first (sessions.Redis.Recent). The view may be stale: a decision on it is
// committed with its version, which the store's compare-and-set checks.
type recentViews interface {
	Recent(id string) (*sessions.Session, bool)
}

var _ recentViews = (*sessions.Redis)(nil)

// maxAdmitAttempts bounds retries when concurrent calls of one session keep
// changing it between snapshot and commit.
const maxAdmitAttempts = 32

// Decider is the decision path of one tool call, shared by live traffic and
// the evals: session snapshot, scope, policies, atomic commit. It does not
// forward anything.
type Decider struct {
	Store    sessions.Store
	Policy   Policy // nil: allow every call in scope
	Profiles map[string]*ProfileConfig
	// Tool looks a namespaced tool up in the catalog.
	Tool func(name string) (tools.Tool, bool)
	// Catalog lists the catalog, to turn a label narrowing into tools.
	Catalog func() []tools.Tool
	// Approvals holds calls that need a person's approval; nil: such
	// calls are denied.
	Approvals *Approvals
	// Detectors returns the call-chain detectors of a profile; nil, or a
	// nil result: none.
	Detectors func(profile string) *policies.Detectors
	// Now is the clock. Nil: time.Now.
	Now func() time.Time

	detect detectCache // decoded detector states, by session
}

// Call is one tool call to decide.
type Call struct {
	SessionID string
	Name      string          // namespaced tool name
	Args      json.RawMessage // raw arguments, as forwarded
	Claims    map[string]any  // the agent's identity claims
	// BeforeEnd, if not nil, runs right before a commit that ends the
	// session (revoke or freeze), which cancels the session's requests on
	// every replica: the request carrying this call's answer uses it to
	// keep itself alive until it has answered.
	BeforeEnd func()
}

// Outcome is what was decided and committed for a call.
type Outcome struct {
	Decision policies.Decision
	// Forward is true when the call goes to its upstream.
	Forward bool
	// Message is what the agent is told when the call does not go.
	Message string
	// Narrowed is true when this call removed tools from the session.
	Narrowed bool
	// Session is the session after the commit (without history).
	Session *sessions.Session
	// Tool is the catalog entry of the call.
	Tool tools.Tool
	// Seq numbers the call in its session.
	Seq int64
	// Flags are what the detectors found before deciding.
	Flags []policies.Flag
}

// Errors of the decision path that are not decisions.
var (
	// ErrSessionEnded: the session is not active (its *StateError is wrapped).
	ErrSessionEnded = errors.New("session not active")
	// ErrStoreDown: the session store cannot be reached; retry later.
	ErrStoreDown = errors.New("session store unavailable: retry later")
)

func (d *Decider) now() time.Time {
	if d.Now == nil {
		return time.Now()
	}
	return d.Now()
}

func (d *Decider) policy() Policy {
	if d.Policy == nil {
		return noRules
	}
	return d.Policy
}

// Admit decides c against the session's current state and commits the
// call with its decision, atomically; a concurrent change of the session
// makes it decide again. A revoke is committed before Admit returns.
//
// When the store keeps recent views (recentViews), the first attempt
// decides on the view, saving a read: the commit succeeds only if the
// session is still at the view's version, so no call is committed on a
// stale view; if it is not, Admit reads the session and decides again.
func (d *Decider) Admit(ctx context.Context, c Call) (Outcome, error) {
	tool, known := d.Tool(c.Name)
	if !known {
		return Outcome{}, fmt.Errorf("unknown tool %q", c.Name)
	}
	views, _ := d.Store.(recentViews)
	for attempt := 0; attempt < maxAdmitAttempts; attempt++ {
		var snap *sessions.Session
		fromView := false
		if attempt == 0 && views != nil {
			snap, fromView = views.Recent(c.SessionID)
		}
		if !fromView {
			var err error
			if snap, err = d.Store.Snapshot(ctx, c.SessionID); err != nil {
				return Outcome{}, storeError(err)
			}
		}
		in := d.input(snap, tool, c)
		det, state := d.detectState(snap)
		var risk float64
		if det != nil {
			in.Flags, risk = det.Inspect(state, in)
			in.Session.Risk, in.Taint = risk, state.Taint()
		}
		pspan := policySpan(ctx) // telemetry.go
		dec := d.policy().Decide(in)
		endPolicySpan(pspan, dec, in.Flags, risk)
		out := Outcome{Decision: dec, Tool: tool, Flags: in.Flags}

		if dec.Action == policies.ActionRequireApproval {
			releaseHistory(in)
			if fromView {
				// A person is asked only about a call decided on the
				// session as the store holds it.
				continue
			}
			// The wait happens outside the snapshot: a person decides, and
			// the call is then committed on the session as it is by then.
			return d.awaitApproval(ctx, c, snap, tool, dec)
		}
		rec, eff := d.effects(tool, c, dec)
		if det != nil {
			det.Record(state, in, dec.Action)
			eff.Detect, eff.Risk = state.Marshal(), &risk
		}
		releaseHistory(in)
		if (eff.Revoke || eff.Freeze) && c.BeforeEnd != nil {
			c.BeforeEnd()
		}
		sess, err := d.Store.Commit(ctx, c.SessionID, snap.Version, rec, eff)
		switch {
		case errors.Is(err, sessions.ErrConflict):
			continue
		case errors.Is(err, sessions.ErrBudget):
			rec, eff = d.refusal(tool, c, "budget", "This session has used its whole call budget.")
			if sess, err = d.commitFresh(ctx, c.SessionID, rec, eff); err != nil {
				return Outcome{}, storeError(err)
			}
			out.Decision = policies.Decision{Action: policies.ActionDeny, Rule: "budget", Message: "This session has used its whole call budget."}
			out.Message, out.Session = out.Decision.Message, sess
			return out, nil
		case err != nil:
			return Outcome{}, storeError(err)
		}
		if det != nil {
			d.detect.put(c.SessionID, eff.Detect, state)
		}
		out.Session, out.Seq = sess, sess.Calls+sess.Denied
		out.Narrowed = len(eff.Remove) > 0
		out.Forward = dec.Action.Forwards()
		if !out.Forward {
			out.Message = dec.Message
			if out.Message == "" {
				out.Message = "This call is not allowed by policy."
			}
		}
		return out, nil
	}
	return Outcome{}, fmt.Errorf("session %s changed %d times while deciding one call: %w", c.SessionID, maxAdmitAttempts, sessions.ErrConflict)
}

// detectState returns the detectors of the session's profile and its
// state, which the caller may change; an unreadable state starts afresh
// (detectors only flag).
func (d *Decider) detectState(s *sessions.Session) (*policies.Detectors, *policies.DetectState) {
	if d.Detectors == nil {
		return nil, nil
	}
	det := d.Detectors(s.Profile)
	if det == nil {
		return nil, nil
	}
	if st := d.detect.take(s.ID, s.Detect); st != nil {
		return det, st
	}
	st, err := policies.UnmarshalDetectState(s.Detect)
	if err != nil {
		st, _ = policies.UnmarshalDetectState(nil)
	}
	return det, st
}

// Observe records what an allowed call returned: the detectors fingerprint
// the result and the call gets its result tags. It changes nothing when
// the session's profile has no detectors, nor when the result gets no tags
// and leaves the detectors' state as it was (the session keeps its
// version, so the next call's decision stands).
func (d *Decider) Observe(ctx context.Context, sessionID string, out Outcome, result string) ([]string, error) {
	if !out.Forward || out.Session == nil || d.Detectors == nil || d.Detectors(out.Session.Profile) == nil {
		return nil, nil
	}
	call := policies.Call{Server: out.Tool.Server, Tool: out.Tool.Upstream, Name: out.Tool.Name,
		Method: "tools/call", Labels: out.Tool.Labels}
	// Usually nothing changed since the admitting commit, whose answer
	// carries the version and detector state: no snapshot needed.
	snap := out.Session
	for attempt := 0; attempt < maxAdmitAttempts; attempt++ {
		det, state := d.detectState(snap)
		tags := det.ObserveResult(state, call, result, out.Tool.Labels, d.now())
		// Usually the result changes nothing: the state is encoded into a
		// scratch buffer only to compare it with the committed one.
		scratch := detectScratch.Get().(*[]byte)
		detect := state.AppendMarshal((*scratch)[:0])
		*scratch = detect
		unchanged := len(tags) == 0 && bytes.Equal(detect, snap.Detect)
		if !unchanged {
			detect = bytes.Clone(detect)
		}
		detectScratch.Put(scratch)
		if unchanged {
			d.detect.put(sessionID, snap.Detect, state)
			return nil, nil
		}
		err := d.Store.Annotate(ctx, sessionID, snap.Version, out.Seq, tags, detect)
		if err == nil {
			d.detect.put(sessionID, detect, state)
			return tags, nil
		}
		if !errors.Is(err, sessions.ErrConflict) {
			return nil, storeError(err)
		}
		if snap, err = d.Store.Get(ctx, sessionID); err != nil {
			return nil, storeError(err)
		}
	}
	return nil, sessions.ErrConflict
}

// detectScratch holds buffers to encode detector states into for a
// comparison.
var detectScratch = sync.Pool{New: func() any { return new([]byte) }}

// commitFresh commits rec on the session as it is now, without deciding
// again: for the outcome of an approval or an exhausted budget.
func (d *Decider) commitFresh(ctx context.Context, id string, rec sessions.CallRecord, eff sessions.Effects) (*sessions.Session, error) {
	for attempt := 0; attempt < maxAdmitAttempts; attempt++ {
		snap, err := d.Store.Snapshot(ctx, id)
		if err != nil {
			return nil, err
		}
		sess, err := d.Store.Commit(ctx, id, snap.Version, rec, eff)
		if errors.Is(err, sessions.ErrConflict) {
			continue
		}
		return sess, err
	}
	return nil, sessions.ErrConflict
}

func (d *Decider) awaitApproval(ctx context.Context, c Call, snap *sessions.Session, tool tools.Tool, dec policies.Decision) (Outcome, error) {
	approved, why := false, "no approver is configured"
	wctx, wspan := child(ctx, telemetry.SpanApproval, trace.SpanKindInternal) // telemetry.go
	defer wspan.End()
	if d.Approvals != nil {
		approved, why = d.Approvals.Wait(wctx, PendingApproval{
			SessionID: c.SessionID, Agent: snap.Agent, Tool: c.Name, Args: c.Args,
			Rule: dec.Rule, Message: dec.Message,
		})
	}
	out := Outcome{Decision: dec, Tool: tool}
	var rec sessions.CallRecord
	var eff sessions.Effects
	if approved {
		rec, eff = d.record(tool, c, policies.ActionAllow, dec.Rule), sessions.Effects{}
	} else {
		rec, eff = d.refusal(tool, c, dec.Rule, "")
		out.Message = fmt.Sprintf("%s (approval %s)", orDefault(dec.Message, "This call needs approval."), why)
	}
	sess, err := d.commitFresh(ctx, c.SessionID, rec, eff)
	if err != nil {
		return Outcome{}, storeError(err)
	}
	out.Session, out.Forward, out.Seq = sess, approved, sess.Calls+sess.Denied
	return out, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func (d *Decider) record(tool tools.Tool, c Call, action policies.Action, rules ...string) sessions.CallRecord {
	var rs []string
	for _, r := range rules {
		if r != "" {
			rs = append(rs, r)
		}
	}
	return sessions.CallRecord{
		Server: tool.Server, Tool: tool.Upstream, Name: c.Name, Args: c.Args,
		Labels: tool.Labels, Decision: string(action), Rules: rs, Time: d.now(),
	}
}

func (d *Decider) refusal(tool tools.Tool, c Call, rule, reason string) (sessions.CallRecord, sessions.Effects) {
	return d.record(tool, c, policies.ActionDeny, rule), sessions.Effects{Denied: true, Reason: reason}
}

// effects turns a decision into the record and effects to commit.
func (d *Decider) effects(tool tools.Tool, c Call, dec policies.Decision) (sessions.CallRecord, sessions.Effects) {
	var rules []string
	if dec.Rule != "" {
		rules = append(rules, dec.Rule)
	}
	for _, m := range dec.Matched {
		if m.ID != dec.Rule {
			rules = append(rules, m.ID)
		}
	}
	rec := d.record(tool, c, dec.Action, rules...)
	var eff sessions.Effects
	switch dec.Action {
	case policies.ActionDeny:
		eff.Denied = true
	case policies.ActionRevoke:
		eff.Denied, eff.Revoke = true, true
		eff.Reason = "policy"
		if dec.Rule != "" {
			eff.Reason = "policy rule " + dec.Rule
		}
	}
	if !dec.Narrow.Empty() {
		eff.Remove = append(eff.Remove, dec.Narrow.Tools...)
		for _, l := range dec.Narrow.Labels {
			eff.Remove = append(eff.Remove, labelPrefix+l)
		}
	}
	return rec, eff
}

// input builds the policy input from a snapshot and the call.
func (d *Decider) input(s *sessions.Session, tool tools.Tool, c Call) *policies.Input {
	in := &policies.Input{
		Call: policies.Call{Server: tool.Server, Tool: tool.Upstream, Name: c.Name, Method: "tools/call",
			Args: c.Args, Labels: tool.Labels},
		Session: policies.Session{ID: s.ID, Agent: s.Agent, Profile: s.Profile, Labels: labelMap(s.Labels),
			Started: s.Created, Expires: s.Expires, Calls: int(s.Calls), Denied: int(s.Denied),
			Risk: s.Risk, Scope: s.Scope},
		Agent: c.Claims,
		Now:   d.now(),
	}
	in.History = historyBuffer(len(s.History))
	for i, h := range s.History {
		in.History[i] = policies.HistoryEntry{Seq: h.Seq, Server: h.Server, Tool: h.Tool, Name: h.Name, Args: h.Args,
			Decision: h.Decision, Time: h.Time, Labels: h.Labels, ResultTags: h.ResultTags}
	}
	if !sessionScope(s).Permits(c.Name, tool.Labels) {
		in.OutOfScope = policies.ActionDeny
		if p := d.Profiles[s.Profile]; p != nil && p.OutOfScope == "revoke" {
			in.OutOfScope = policies.ActionRevoke
		}
	}
	return in
}

// sessionScope is the session's scope as policies read it: granted globs,
// minus removed globs and labels.
func sessionScope(s *sessions.Session) policies.Scope {
	sc := policies.Scope{Tools: s.Scope}
	for _, r := range s.Removed {
		if l, ok := strings.CutPrefix(r, labelPrefix); ok {
			sc.Removed.Labels = append(sc.Removed.Labels, l)
		} else {
			sc.Removed.Tools = append(sc.Removed.Tools, r)
		}
	}
	return sc
}

// Permits reports whether the session may call the catalog tool t.
func Permits(s *sessions.Session, t tools.Tool) bool {
	return sessionScope(s).Permits(t.Name, t.Labels)
}

// storeError sorts store errors into what the gateway tells agents.
func storeError(err error) error {
	switch {
	case errors.Is(err, sessions.ErrUnavailable):
		return fmt.Errorf("%w: %v", ErrStoreDown, err)
	case errors.Is(err, sessions.ErrNotActive), errors.Is(err, sessions.ErrNotFound):
		return fmt.Errorf("%w: %v", ErrSessionEnded, err)
	}
	return err
}

// historyBuffers reuses the policy input's history between decisions: a
// full history of 256 entries is 40 KB, made for every call otherwise.
var historyBuffers = sync.Pool{New: func() any { return new([]policies.HistoryEntry) }}

func historyBuffer(n int) []policies.HistoryEntry {
	b := historyBuffers.Get().(*[]policies.HistoryEntry)
	if cap(*b) < n {
		*b = make([]policies.HistoryEntry, n)
	}
	h := (*b)[:n]
	*b = nil
	historyBufferHeads.Put(b)
	return h
}

// historyBufferHeads keeps the slice headers that carry buffers in and
// out of historyBuffers, so that neither way allocates.
var historyBufferHeads = sync.Pool{New: func() any { return new([]policies.HistoryEntry) }}

// releaseHistory hands the input's history back for reuse once nothing
// reads it any more (after the decision and the detectors' Record).
func releaseHistory(in *policies.Input) {
	if cap(in.History) == 0 {
		return
	}
	clear(in.History) // drop references into the session's history
	b := historyBufferHeads.Get().(*[]policies.HistoryEntry)
	*b = in.History[:0]
	in.History = nil
	historyBuffers.Put(b)
}
