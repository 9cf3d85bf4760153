package sessions

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is the Store shared by every replica. A session is up to three keys with the hash tag
// {id}, all expiring with the session (TTL = remaining lifetime + Grace): a hash of its fields,
// a list of compact JSON history entries (the tail), and a list of flate-compressed blocks of
// older entries (see lua.go). The token is kept only as its SHA-256 hash. Admission runs as Lua scripts, so a call is only admitted on the current version
// and never after a committed revoke. Indexes (by agent, by state, by expiry) are separate
// keys, updated after each change and repaired lazily when a read finds them wrong.
type Redis struct {
	c       redis.UniversalClient
	opts    Options
	prefix  string
	channel string
	block   int
	blocks  *blockCache
	hist    *histCache
	seals   sealJobs
	wait    WaitOptions
	commits batcher
	// channelArg is channel as a script argument, boxed once.
	channelArg any
}

var _ Store = (*Redis)(nil)

// RedisOptions configure NewRedis.
type RedisOptions struct {
	Options
	// Prefix starts every key. Empty: "toolgate".
	Prefix string
	// Channel carries events between replicas. Empty: Prefix + ":events".
	Channel string
	// HistoryBlock is how many history entries are sealed into one compressed block.
	// Zero: 16. Negative: history is never compressed.
	HistoryBlock int
	// HistoryCache bounds how many decoded history entries this replica keeps, across
	// sessions, so that a Snapshot fetches and decodes only the entries added since its last
	// read of the session, and so that Recent can answer without reading. Zero: 32768 (128
	// sessions at the default history limit). Negative: no cache, and Recent has no views.
	HistoryCache int
	// Wait makes revokes and freezes wait for Redis replicas (redis_wait.go). Zero: no wait.
	Wait WaitOptions
}

// NewRedis returns a store on c, which may be a standalone, Sentinel or Cluster client.
func NewRedis(c redis.UniversalClient, opts RedisOptions) *Redis {
	if opts.Prefix == "" {
		opts.Prefix = "toolgate"
	}
	if opts.Channel == "" {
		opts.Channel = opts.Prefix + ":events"
	}
	switch {
	case opts.HistoryBlock == 0:
		opts.HistoryBlock = 16
	case opts.HistoryBlock < 0:
		opts.HistoryBlock = 0
	}
	if opts.HistoryCache == 0 {
		opts.HistoryCache = 1 << 15
	}
	return &Redis{c: c, opts: opts.Options.withDefaults(), prefix: opts.Prefix, channel: opts.Channel,
		block: opts.HistoryBlock, blocks: newBlockCache(4096), hist: newHistCache(opts.HistoryCache), wait: opts.Wait,
		channelArg: opts.Channel}
}

func (r *Redis) metaKey(id string) string    { return r.prefix + ":{" + id + "}:m" }
func (r *Redis) histKey(id string) string    { return r.prefix + ":{" + id + "}:h" }
func (r *Redis) blockKey(id string) string   { return r.prefix + ":{" + id + "}:b" }
func (r *Redis) agentKey(a string) string    { return r.prefix + ":idx:agent:" + a }
func (r *Redis) stateKey(s State) string     { return r.prefix + ":idx:state:" + string(s) }
func (r *Redis) expiryKey() string           { return r.prefix + ":idx:expiry" }
func (r *Redis) lockKey(agent string) string { return r.prefix + ":lock:" + agent }

// expiryMember names a session in the expiry index: its id (fixed length) then its agent, so
// that the reaper can clean the agent index after the session's keys are gone.
func expiryMember(id, agent string) string { return id + agent }

// fail wraps err with the step, and with ErrUnavailable unless Redis itself answered with an
// error that says the request was wrong.
func fail(step string, err error) error {
	if unavailable(err) {
		return fmt.Errorf("%s: %w: %w", step, ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", step, err)
}

func unavailable(err error) bool {
	var re redis.Error
	if !errors.As(err, &re) {
		return true // network, timeout, closed pool, cancelled context: fail closed
	}
	for _, p := range []string{"LOADING", "READONLY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "MOVED", "ASK", "BUSY", "NOREPLICAS"} {
		if strings.HasPrefix(re.Error(), p) {
			return true
		}
	}
	return false
}

func (r *Redis) now() int64 { return r.opts.Clock.Now().UnixMilli() }

// Create implements Store.
func (r *Redis) Create(ctx context.Context, spec Spec) (*Session, string, error) {
	if err := spec.Validate(); err != nil {
		return nil, "", fmt.Errorf("create session: %w", err)
	}
	if locked, err := r.AgentLocked(ctx, spec.Agent); err != nil {
		return nil, "", fmt.Errorf("create session: %w", err)
	} else if locked {
		return nil, "", fmt.Errorf("create session for %q: %w", spec.Agent, ErrAgentLocked)
	}
	token, hash := specToken(spec)
	s := newSession(spec, IDFromHash(hash), r.opts.Clock.Now())
	if spec.Token != "" {
		// A chosen token names an existing session if one is still live or revoked: claim the
		// id atomically, clearing what an expired session left.
		claimed, err := claimScript.Run(ctx, r.c, []string{r.metaKey(s.ID), r.histKey(s.ID), r.blockKey(s.ID)},
			s.Created.UnixMilli()).Int()
		if err != nil {
			return nil, "", fail("create session", err)
		}
		if claimed == 0 {
			return nil, "", fmt.Errorf("create session for %q: %w", spec.Agent, ErrTokenTaken)
		}
	}
	scope, _ := json.Marshal(s.Scope)
	labels, _ := json.Marshal(s.Labels)
	mk := r.metaKey(s.ID)
	_, err := r.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, mk,
			"a", s.Agent, "p", s.Profile, "l", labels, "sc", scope, "rm", "[]",
			"st", string(s.State), "why", "", "c", s.Created.UnixMilli(), "e", s.Expires.UnixMilli(),
			"la", s.LastActivity.UnixMilli(), "i", s.IdleTimeout.Milliseconds(), "b", s.Budget,
			"n", 0, "d", 0, "r", "0", "hl", s.HistoryLimit, "hb", 0, "v", s.Version, "th", hex.EncodeToString(hash[:]))
		// A relative TTL by the store's clock: the key lives as long as the session plus grace.
		p.PExpire(ctx, mk, s.Expires.Sub(s.Created)+r.opts.Grace)
		return nil
	})
	if err != nil {
		return nil, "", fail("create session", err)
	}
	_, err = r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAdd(ctx, r.agentKey(s.Agent), redis.Z{Member: s.ID})
		p.ZAdd(ctx, r.stateKey(StateActive), redis.Z{Member: s.ID})
		p.ZAdd(ctx, r.expiryKey(), redis.Z{Score: float64(s.Expires.UnixMilli()), Member: expiryMember(s.ID, s.Agent)})
		return nil
	})
	if err != nil {
		// The session exists but cannot be listed or reaped: end it rather than leak it.
		_, _ = r.Revoke(ctx, s.ID, "index update failed")
		return nil, "", fail("create session: index", err)
	}
	// The lock check above and the write are not atomic (the lock key lives in another slot).
	// Checking again closes the gap: a lock that landed meanwhile revokes the new session.
	if locked, err := r.AgentLocked(ctx, spec.Agent); err != nil || locked {
		_, _ = r.Revoke(ctx, s.ID, "agent locked")
		if err != nil {
			return nil, "", fmt.Errorf("create session: %w", err)
		}
		return nil, "", fmt.Errorf("create session for %q: %w", spec.Agent, ErrAgentLocked)
	}
	return s, token, nil
}

// LookupToken implements Store.
func (r *Redis) LookupToken(ctx context.Context, hash [32]byte) (*Session, error) {
	s, err := r.read(ctx, "look up token", IDFromHash(hash), false, &hash)
	if err != nil {
		return s, err
	}
	return s, activeErr(s)
}

// Snapshot implements Store.
func (r *Redis) Snapshot(ctx context.Context, id string) (*Session, error) {
	s, err := r.read(ctx, "snapshot", id, true, nil)
	if err != nil {
		return s, err
	}
	return s, activeErr(s)
}

// Get implements Store.
func (r *Redis) Get(ctx context.Context, id string) (*Session, error) {
	return r.read(ctx, "get session", id, true, nil)
}

func activeErr(s *Session) error {
	if s.State != StateActive {
		return &StateError{ID: s.ID, State: s.State, Reason: s.Reason}
	}
	return nil
}

// read runs readScript; when hash is set the session must carry that token hash. With
// history, it asks only for the entries appended since the history cached for the session
// (see histCache), and decodes only those.
func (r *Redis) read(ctx context.Context, step, id string, history bool, hash *[32]byte) (*Session, error) {
	if err := validID(id); err != nil {
		return nil, fmt.Errorf("%s: %w", step, err)
	}
	hist := "0"
	cached, haveCache := histSlot{last: -1}, false
	if history {
		hist = "1"
		if c, ok := r.hist.get(id); ok {
			cached, haveCache = c, true
		}
	}
	block := r.block
	if block <= 0 {
		block = 1
	}
	res, err := r.run(ctx, readScript, id, hist, cached.last, cached.created, block)
	if err != nil {
		return nil, fail(step, err)
	}
	if res.code == "nf" {
		r.hist.drop(id)
		return nil, fmt.Errorf("%s: session %s: %w", step, id, ErrNotFound)
	}
	if hash != nil && subtle.ConstantTimeCompare([]byte(res.tokenHash), []byte(hex.EncodeToString(hash[:]))) != 1 {
		return nil, fmt.Errorf("%s: %w", step, ErrNotFound)
	}
	r.moveState(ctx, res) // also forgets what the cache holds of an ended session
	if !history {
		return res.s, nil
	}
	entries := res.history
	if len(res.sealed) > 0 {
		entries = nil
		for _, b := range res.sealed {
			e, err := r.blocks.entries(b)
			if err != nil {
				r.hist.drop(id)
				return nil, fmt.Errorf("%s: session %s: history block: %w", step, id, err)
			}
			entries = append(entries, e...)
		}
		entries = append(entries, res.history...)
	}
	last := res.s.Calls + res.s.Denied
	var recs []CallRecord
	if res.delta && haveCache {
		want := int(last - cached.last)
		if len(entries) < want {
			// The blocks held other sizes than expected: read the whole history.
			r.hist.drop(id)
			return r.read(ctx, step, id, history, hash)
		}
		recs, err = appendHistory(cached.recs, entries[len(entries)-want:], res.s, res.s.HistoryLimit)
	} else {
		if over := len(entries) - res.s.HistoryLimit; over > 0 {
			entries = entries[over:]
		}
		recs, err = appendHistory(nil, entries, res.s, res.s.HistoryLimit)
	}
	if err != nil {
		r.hist.drop(id)
		return nil, fmt.Errorf("%s: session %s: %w", step, id, err)
	}
	recs = withTags(recs, res.tags)
	if res.s.State == StateActive || res.s.State == StateFrozen {
		r.hist.put(id, res.s.Created.UnixMilli(), last, recs, viewOf(res.s))
	}
	if len(recs) > 0 {
		// Result tags are the caller's own; names, args, labels and rules are shared with the
		// cache, as they already are between entries (see entryMemo), and nothing edits them
		// in place.
		res.s.History = make([]CallRecord, len(recs))
		copy(res.s.History, recs)
		for i := range res.s.History {
			h := &res.s.History[i]
			h.ResultTags = slices.Clone(h.ResultTags)
		}
	}
	return res.s, nil
}

// withTags returns recs with the result tags of tags (by seq) added: recs itself when that
// adds none, else a copy. Stored tag lists only grow, so tags the records already carry are a
// prefix of those of tags, and adding them again changes nothing.
func withTags(recs []CallRecord, tags map[int64][]string) []CallRecord {
	out := recs
	for i := range recs {
		t := tags[recs[i].Seq]
		if len(t) == 0 {
			continue
		}
		// Clip makes addUnique copy before it appends: the records may be shared.
		if rt := addUnique(slices.Clip(recs[i].ResultTags), t); len(rt) > len(recs[i].ResultTags) {
			if len(out) > 0 && &out[0] == &recs[0] {
				out = slices.Clone(recs)
			}
			out[i].ResultTags = rt
		}
	}
	return out
}

// viewOf returns a copy of s without history, which no caller holds, for the history cache.
func viewOf(s *Session) *Session {
	v := *s
	v.Labels, v.Scope, v.Removed = slices.Clone(s.Labels), slices.Clone(s.Scope), slices.Clone(s.Removed)
	v.Detect = bytes.Clone(s.Detect)
	v.History = nil
	return &v
}

// Recent returns session id as this replica last knew it, without asking Redis: as its last
// Snapshot or Get read it, moved on by the commits and annotations this replica made since.
// Another replica may have changed the session meanwhile, so a decision taken on it must be
// committed with its Version: Commit's compare-and-set then proves the view was current (it
// also checks the state, expiry and idle timeout), or fails with ErrConflict, after which the
// caller takes a Snapshot and decides again.
//
// ok is false when this replica holds no view of the session, when the view is not active or
// has expired by the store's Clock, and for a few calls after a commit on the view conflicted
// (the session is busy on other replicas too).
//
// Unlike a Snapshot, the returned session is shared with the cache, to spare a copy of the
// history on every call: it is read-only. Its fields may be set, but nothing it refers to
// (history, records, lists, detector state) may be modified.
func (r *Redis) Recent(id string) (*Session, bool) {
	view, recs, ok := r.hist.recent(id)
	if !ok || view.State != StateActive || expiredReason(view, r.opts.Clock.Now()) != "" {
		return nil, false
	}
	s := *view
	if len(recs) > 0 {
		s.History = recs
	}
	return &s, true
}

// Commit implements Store. Its answer carries the session's fields only; the call joins the
// view this replica holds (see Recent). Once the history tail holds HistoryBlock entries, the
// answer carries them too: they are compressed here, and the session's next commit from this
// replica seals them in the same script (see sealJobs), so sealing costs no request. Commits
// of different sessions made at the same moment share one pipeline (see batcher).
func (r *Redis) Commit(ctx context.Context, id string, version int64, rec CallRecord, eff Effects) (*Session, error) {
	if err := validID(id); err != nil {
		return nil, fmt.Errorf("commit call: %w", err)
	}
	now := r.now()
	rec, err := normalizeRecord(rec, time.UnixMilli(now))
	if err == nil {
		err = validRemove(eff.Remove)
	}
	if err != nil {
		return nil, fmt.Errorf("commit call: %w", err)
	}
	// The arguments of commitScript, ARGV[4] on.
	risk, remove, labels, expire, op := "", "", "", any(""), ""
	if eff.Risk != nil {
		risk = strconv.FormatFloat(*eff.Risk, 'g', -1, 64)
	}
	if len(eff.Remove) > 0 {
		remove = jsonList(eff.Remove)
	}
	if len(eff.AddLabels) > 0 {
		labels = jsonList(eff.AddLabels)
	}
	if !eff.ExpireAt.IsZero() {
		expire = eff.ExpireAt.UnixMilli()
	}
	switch {
	case eff.Revoke:
		op = "revoke"
	case eff.Freeze:
		op = "freeze"
	}
	block := r.block
	if block == 0 {
		block = 1 << 30 // never seal
	}
	// A version names one state of the session only together with its creation time: a
	// session made again for the same chosen token counts its versions from 1 again.
	var created any = ""
	if c, ok := r.hist.viewCreated(id, version); ok {
		created = c
	}
	var sealFirst any = ""
	sealBlock := ""
	if job, ok := r.seals.get(id); ok {
		sealFirst, sealBlock = job.first, job.block
	}
	args := append(r.scriptArgs(commitScript, id, now, 17), version, encodeEntry(rec), flag(eff.Denied),
		risk, remove, labels, expire, op, eff.Reason, r.opts.Grace.Milliseconds(),
		rec.Time.UnixMilli(), block, flag(eff.Detect != nil), eff.Detect, created, sealFirst, sealBlock)
	v, err := r.eval(ctx, commitScript, scriptCmd(ctx, args))
	if err != nil {
		return nil, fail("commit call", err)
	}
	res, err := decodeResult(id, v)
	if err != nil {
		return nil, fail("commit call", err)
	}
	if res.code == "nf" {
		r.hist.drop(id)
		return nil, fmt.Errorf("commit call: session %s: %w", id, ErrNotFound)
	}
	r.moveState(ctx, res)
	s := res.s
	switch res.code {
	case "state":
		r.hist.dropView(id, 0)
		return nil, fmt.Errorf("commit call: %w", activeErr(s))
	case "conflict":
		r.hist.conflicted(id, version)
		return nil, fmt.Errorf("commit call on version %d, session is at %d: %w", version, s.Version, ErrConflict)
	case "budget":
		return nil, fmt.Errorf("commit call: %d of %d calls used: %w", s.Calls, s.Budget, ErrBudget)
	}
	if eff.Detect != nil {
		s.Detect = bytes.Clone(eff.Detect) // the answer leaves out what the caller sent
	}
	r.nextSeal(id, res)
	if s.State == StateActive || s.State == StateFrozen {
		rec.Seq = s.Calls + s.Denied
		r.hist.committed(id, version, historyRecord(rec), viewOf(s))
	}
	if eff.Revoke || eff.Freeze {
		r.awaitAcks(ctx, id, s.Version)
		r.warnUnreplicated(r.awaitReplicas(ctx, "commit call", "session "+id, id))
	}
	if !eff.ExpireAt.IsZero() && s.Expires.Equal(ms(eff.ExpireAt)) {
		if err := r.c.ZAdd(ctx, r.expiryKey(), redis.Z{Score: float64(s.Expires.UnixMilli()), Member: expiryMember(id, s.Agent)}).Err(); err != nil {
			r.opts.Logger.Warn("session expiry index not updated; the reaper's interval will catch it", "session", id, "err", err)
		}
	}
	return s, nil
}

// nextSeal compresses the tail entries a commit's answer holds into the block the next commit
// of the session seals (see sealJobs), or forgets the session's job when there are none.
func (r *Redis) nextSeal(id string, res scriptResult) {
	var job sealJob
	if r.block > 0 && len(res.history) >= r.block {
		block, err := compressEntries(res.history[:r.block])
		if err != nil {
			r.opts.Logger.Warn("history not compressed", "session", id, "err", err)
		} else {
			job = sealJob{first: res.sealFirst, block: block}
		}
	}
	r.seals.set(id, job)
}

// historyRecord is rec, as normalized for Commit and given its seq, as a read decodes it from
// its history entry: empty lists are nil.
func historyRecord(rec CallRecord) CallRecord {
	for _, l := range []*[]string{&rec.Labels, &rec.Rules, &rec.ResultTags} {
		if len(*l) == 0 {
			*l = nil
		}
	}
	return rec
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

func jsonList(names []string) string {
	b, _ := json.Marshal(names)
	return string(b)
}

// Annotate implements Store.
func (r *Redis) Annotate(ctx context.Context, id string, version, seq int64, tags []string, detect []byte) error {
	if err := validID(id); err != nil {
		return fmt.Errorf("annotate call: %w", err)
	}
	t := ""
	if len(tags) > 0 {
		t = jsonList(tags)
	}
	argv := []any{r.channel, r.now(), id, seq, t, flag(detect != nil), string(detect), version}
	v, err := annotateScript.Run(ctx, r.c, []string{r.metaKey(id), r.histKey(id), r.blockKey(id)}, argv...).Slice()
	if err != nil {
		return fail("annotate call", err)
	}
	if len(v) > 0 && str(v[0]) == "nf" {
		return fmt.Errorf("annotate call: session %s: %w", id, ErrNotFound)
	}
	if len(v) < 4 {
		return fmt.Errorf("annotate call: session script answered %d values; want 4", len(v))
	}
	if str(v[0]) == "conflict" {
		r.hist.dropView(id, 0)
		return fmt.Errorf("annotate call on version %d, session is at %s: %w", version, str(v[3]), ErrConflict)
	}
	// A read inside the script may have expired the session.
	after := State(str(v[2]))
	r.moveState(ctx, scriptResult{before: State(str(v[1])), after: after, s: &Session{ID: id}})
	if nv, err := strconv.ParseInt(str(v[3]), 10, 64); err == nil {
		r.hist.annotated(id, version, nv, seq, tags, detect, after)
	} else {
		r.hist.dropView(id, 0)
	}
	return nil
}

// Touch implements Store.
func (r *Redis) Touch(ctx context.Context, id string) (*Session, error) {
	return r.mutate(ctx, "touch", id, "touch", "")
}

// Narrow implements Store.
func (r *Redis) Narrow(ctx context.Context, id string, remove []string) (*Session, error) {
	if err := validRemove(remove); err != nil {
		return nil, fmt.Errorf("narrow: %w", err)
	}
	if len(remove) == 0 {
		return r.Get(ctx, id)
	}
	return r.mutate(ctx, "narrow", id, "narrow", jsonList(remove))
}

// Freeze implements Store.
func (r *Redis) Freeze(ctx context.Context, id, reason string) (*Session, error) {
	return r.mutate(ctx, "freeze", id, "freeze", reason)
}

// Resume implements Store.
func (r *Redis) Resume(ctx context.Context, id string) (*Session, error) {
	return r.mutate(ctx, "resume", id, "resume", "")
}

// Revoke implements Store.
func (r *Redis) Revoke(ctx context.Context, id, reason string) (*Session, error) {
	return r.mutate(ctx, "revoke", id, "revoke", reason)
}

func (r *Redis) mutate(ctx context.Context, step, id, op, arg string) (*Session, error) {
	s, err := r.mutateOnce(ctx, step, id, op, arg)
	if err == nil && (op == "revoke" || op == "freeze") {
		r.awaitAcks(ctx, s.ID, s.Version)
		err = r.awaitReplicas(ctx, step, "session "+s.ID, s.ID)
	}
	return s, err
}

func (r *Redis) mutateOnce(ctx context.Context, step, id, op, arg string) (*Session, error) {
	if err := validID(id); err != nil {
		return nil, fmt.Errorf("%s: %w", step, err)
	}
	res, err := r.run(ctx, mutateScript, id, op, arg)
	if err != nil {
		return nil, fail(step, err)
	}
	if res.code == "nf" {
		return nil, fmt.Errorf("%s: session %s: %w", step, id, ErrNotFound)
	}
	r.moveState(ctx, res)
	if res.code == "state" {
		return nil, fmt.Errorf("%s: %w", step, &StateError{ID: id, State: res.s.State, Reason: res.s.Reason})
	}
	r.hist.dropView(id, res.s.Version) // a view from before the change is stale
	return res.s, nil
}

// RevokeAgent implements Store.
func (r *Redis) RevokeAgent(ctx context.Context, agent, reason string) (int, error) {
	ids, err := r.c.ZRange(ctx, r.agentKey(agent), 0, -1).Result()
	if err != nil {
		return 0, fail("revoke agent: list sessions", err)
	}
	n := 0
	for _, id := range ids {
		res, err := r.run(ctx, mutateScript, id, "revoke", reason)
		if err != nil {
			return n, fail("revoke agent: session "+id, err)
		}
		if res.code == "nf" {
			r.c.ZRem(ctx, r.agentKey(agent), id)
			continue
		}
		r.moveState(ctx, res)
		if res.before != res.after && res.after == StateRevoked {
			n++
			r.awaitAcks(ctx, id, res.s.Version)
		}
	}
	return n, r.awaitReplicas(ctx, "revoke agent", "every session of agent "+agent, agent)
}

// LockAgent implements Store.
func (r *Redis) LockAgent(ctx context.Context, agent string) error {
	if err := r.c.Set(ctx, r.lockKey(agent), "1", 0).Err(); err != nil {
		return fail("lock agent", err)
	}
	return nil
}

// UnlockAgent implements Store.
func (r *Redis) UnlockAgent(ctx context.Context, agent string) error {
	if err := r.c.Del(ctx, r.lockKey(agent)).Err(); err != nil {
		return fail("unlock agent", err)
	}
	return nil
}

// AgentLocked implements Store.
func (r *Redis) AgentLocked(ctx context.Context, agent string) (bool, error) {
	n, err := r.c.Exists(ctx, r.lockKey(agent)).Result()
	if err != nil {
		return false, fail("check agent lock", err)
	}
	return n == 1, nil
}

// List implements Store. With an agent it walks that agent's index by id; without, it walks
// the state indexes in the order of States.
func (r *Redis) List(ctx context.Context, opts ListOptions) (Page, error) {
	if opts.State != "" && !opts.State.Valid() {
		return Page{}, fmt.Errorf("list sessions: %w: state %q: want one of %v", ErrInvalid, opts.State, States)
	}
	cur, err := parseListCursor(opts.Cursor, opts.Agent != "")
	if err != nil {
		return Page{}, fmt.Errorf("list sessions: %w", err)
	}
	limit := clip(opts.Limit)
	var p Page
	type walk struct {
		key   string
		state State // the state of the index, "" for an agent index
		rank  int
	}
	var walks []walk
	switch {
	case opts.Agent != "":
		walks = []walk{{key: r.agentKey(opts.Agent)}}
	case opts.State != "":
		walks = []walk{{key: r.stateKey(opts.State), state: opts.State, rank: slices.Index(States, opts.State)}}
	default:
		for i, st := range States {
			walks = append(walks, walk{key: r.stateKey(st), state: st, rank: i})
		}
	}
	for _, w := range walks {
		if w.rank < cur.rank {
			continue
		}
		min := "-"
		if w.rank == cur.rank && cur.id != "" {
			min = "(" + cur.id
		}
		for {
			ids, err := r.c.ZRangeByLex(ctx, w.key, &redis.ZRangeBy{Min: min, Max: "+", Count: int64(limit)}).Result()
			if err != nil {
				return Page{}, fail("list sessions", err)
			}
			for _, id := range ids {
				min = "(" + id
				res, err := r.run(ctx, readScript, id, "0")
				if err != nil {
					return Page{}, fail("list sessions: read "+id, err)
				}
				if res.code == "nf" {
					r.c.ZRem(ctx, w.key, id)
					continue
				}
				r.moveState(ctx, res)
				s := res.s
				if w.state != "" && s.State != w.state {
					// A change whose index update was lost, or one made since: repair.
					r.c.ZRem(ctx, w.key, id)
					r.c.ZAdd(ctx, r.stateKey(s.State), redis.Z{Member: id})
					continue
				}
				if opts.State != "" && s.State != opts.State {
					continue
				}
				if len(p.Sessions) == limit {
					p.Next = nextCursor(p.Sessions[len(p.Sessions)-1], opts.Agent != "")
					return p, nil
				}
				p.Sessions = append(p.Sessions, s)
			}
			if len(ids) < limit {
				break
			}
		}
	}
	return p, nil
}

// Subscribe implements Store.
func (r *Redis) Subscribe(ctx context.Context) (<-chan Event, error) {
	ps := r.c.Subscribe(ctx, r.channel)
	// Wait for the confirmation, so that every event published after Subscribe returns arrives.
	if _, err := ps.Receive(ctx); err != nil {
		_ = ps.Close()
		return nil, fail("subscribe to session events", err)
	}
	// Announce this replica: revokes wait for the acknowledgements of announced replicas.
	r.heartbeat(ctx)
	go func() {
		t := time.NewTicker(replicaHeartbeat)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				r.c.ZRem(context.WithoutCancel(ctx), r.replicasKey(), r.opts.ReplicaID)
				return
			case <-t.C:
				r.heartbeat(ctx)
			}
		}
	}()
	msgs := ps.Channel(redis.WithChannelSize(r.opts.EventBuffer))
	out := make(chan Event, r.opts.EventBuffer)
	go func() {
		defer close(out)
		defer ps.Close()
		for {
			select {
			case <-ctx.Done():
				return
			case msg, ok := <-msgs:
				if !ok {
					return
				}
				var ev Event
				if err := json.Unmarshal([]byte(msg.Payload), &ev); err != nil {
					r.opts.Logger.Warn("session event not understood", "payload", msg.Payload, "err", err)
					continue
				}
				if ev.Kind == EventRevoked || ev.Kind == EventExpired {
					r.hist.drop(ev.SessionID) // its history will not be read for a decision again
				} else {
					r.hist.dropView(ev.SessionID, ev.Version) // a change the view does not hold
				}
				select {
				case out <- ev:
				default:
					r.opts.Logger.Warn("session event dropped: subscriber too slow", "session", ev.SessionID, "kind", ev.Kind)
				}
			}
		}
	}()
	return out, nil
}

// A replica subscribed to events announces itself every replicaHeartbeat; one silent for
// replicaSilence is taken for dead, and revokes stop waiting for it.
const (
	replicaHeartbeat = 5 * time.Second
	replicaSilence   = 3 * replicaHeartbeat
)

func (r *Redis) replicasKey() string { return r.prefix + ":replicas" }

// ackKey lists the replicas that confirmed the ending change of session id at version; it
// shares the session's hash tag.
func (r *Redis) ackKey(id string, version int64) string {
	return r.prefix + ":{" + id + "}:ack:" + strconv.FormatInt(version, 10)
}

func (r *Redis) heartbeat(ctx context.Context) {
	// Wall time, not the store's Clock: liveness is about real replicas.
	if err := r.c.ZAdd(ctx, r.replicasKey(), redis.Z{Score: float64(time.Now().UnixMilli()), Member: r.opts.ReplicaID}).Err(); err != nil {
		r.opts.Logger.Warn("replica heartbeat not written", "err", err)
	}
}

// Ack implements Store.
func (r *Redis) Ack(ctx context.Context, ev Event) error {
	if !ev.needsAck() {
		return nil
	}
	key := r.ackKey(ev.SessionID, ev.Version)
	_, err := r.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.RPush(ctx, key, r.opts.ReplicaID)
		p.PExpire(ctx, key, 30*time.Second)
		return nil
	})
	if err != nil {
		return fail("acknowledge session event", err)
	}
	return nil
}

// awaitAcks waits until every live replica confirmed the ending change of session id at
// version, or the ack timeout passed. It never fails the change: the store already refuses
// the session's calls; the wait only makes the answer mean that no replica still forwards one.
func (r *Redis) awaitAcks(ctx context.Context, id string, version int64) {
	deadline := time.Now().Add(r.opts.AckTimeout)
	live, err := r.c.ZRangeByScore(ctx, r.replicasKey(), &redis.ZRangeBy{
		Min: strconv.FormatInt(time.Now().Add(-replicaSilence).UnixMilli(), 10), Max: "+inf"}).Result()
	if err != nil || len(live) == 0 {
		return
	}
	missing := make(map[string]bool, len(live))
	for _, rid := range live {
		missing[rid] = true
	}
	key := r.ackKey(id, version)
	for len(missing) > 0 {
		wait := time.Until(deadline)
		if wait < time.Millisecond {
			break // BLPOP rounds a shorter timeout to 0, which blocks for ever
		}
		got, err := r.c.BLPop(ctx, wait, key).Result()
		if err != nil {
			break // redis.Nil: timed out
		}
		delete(missing, got[1])
	}
	if len(missing) > 0 {
		r.opts.Logger.Warn("revoke acknowledged before every replica confirmed it", "session", id, "missing", len(missing))
	}
}

// Reap implements Store. Sessions past their expiry are expired (publishing the event); once
// their grace has passed too, their index entries are removed (their keys expire by TTL).
func (r *Redis) Reap(ctx context.Context) (time.Time, error) {
	now := r.now()
	grace := r.opts.Grace.Milliseconds()
	for {
		due, err := r.c.ZRangeByScore(ctx, r.expiryKey(), &redis.ZRangeBy{Min: "-inf", Max: strconv.FormatInt(now, 10), Count: 500}).Result()
		if err != nil {
			return time.Time{}, fail("reap sessions", err)
		}
		for _, member := range due {
			if len(member) < idLen {
				r.c.ZRem(ctx, r.expiryKey(), member)
				continue
			}
			id, agent := member[:idLen], member[idLen:]
			res, err := r.run(ctx, readScript, id, "0")
			if err != nil {
				return time.Time{}, fail("reap session "+id, err)
			}
			if res.code == "ok" {
				r.moveState(ctx, res)
				if cleanup := res.s.Expires.UnixMilli() + grace; now < cleanup {
					// Keep it listable as expired (or revoked) until its keys go.
					r.c.ZAdd(ctx, r.expiryKey(), redis.Z{Score: float64(cleanup), Member: member})
					continue
				}
			}
			_, err = r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
				p.ZRem(ctx, r.expiryKey(), member)
				p.ZRem(ctx, r.agentKey(agent), id)
				for _, st := range States {
					p.ZRem(ctx, r.stateKey(st), id)
				}
				return nil
			})
			if err != nil {
				return time.Time{}, fail("reap session "+id, err)
			}
		}
		if len(due) < 500 {
			break
		}
	}
	next, err := r.c.ZRangeByScoreWithScores(ctx, r.expiryKey(), &redis.ZRangeBy{Min: "(" + strconv.FormatInt(now, 10), Max: "+inf", Count: 1}).Result()
	if err != nil {
		return time.Time{}, fail("reap sessions: next expiry", err)
	}
	if len(next) == 0 {
		return time.Time{}, nil
	}
	return time.UnixMilli(int64(next[0].Score)), nil
}

// scriptResult is a decoded script answer.
type scriptResult struct {
	code          string
	before, after State
	s             *Session
	tokenHash     string
	history       []string           // the tail, raw entries; after a commit, entries to seal
	sealed        []string           // compressed blocks of entries, older than the tail
	tags          map[int64][]string // result tags by call seq
	delta         bool               // history and sealed hold only entries after the caller's
	sealFirst     int64              // after a commit: the seq of history[0]
}

func (r *Redis) run(ctx context.Context, sc *script, id string, args ...any) (scriptResult, error) {
	return r.runAt(ctx, sc, id, r.now(), args...)
}

func (r *Redis) runAt(ctx context.Context, sc *script, id string, now int64, args ...any) (scriptResult, error) {
	cmd := scriptCmd(ctx, append(r.scriptArgs(sc, id, now, len(args)), args...))
	r.send(ctx, sc, []*redis.Cmd{cmd})
	v, err := cmd.Slice()
	if err != nil {
		return scriptResult{}, err
	}
	return decodeResult(id, v)
}

// decodeResult decodes the answer v of a script run on session id.
func decodeResult(id string, v []any) (scriptResult, error) {
	if len(v) == 0 {
		return scriptResult{}, errors.New("session script answered nothing")
	}
	var err error
	res := scriptResult{code: str(v[0])}
	if res.code == "nf" {
		return res, nil
	}
	if len(v) < 4 {
		return res, fmt.Errorf("session script answered %d values; want 4 or more", len(v))
	}
	res.before, res.after = State(str(v[1])), State(str(v[2]))
	flat, _ := v[3].([]any)
	res.s, res.tokenHash, err = parseMeta(id, flat)
	if err != nil {
		return res, err
	}
	if !packed(flat) {
		res.tags = parseTags(flat)
	}
	if len(v) > 5 {
		hist, _ := v[4].([]any)
		for _, e := range hist {
			res.history = append(res.history, str(e))
		}
		blocks, _ := v[5].([]any)
		for _, b := range blocks {
			res.sealed = append(res.sealed, str(b))
		}
	}
	if len(v) > 7 {
		d, _ := v[7].(int64)
		res.delta = d == 1
	}
	if len(v) > 8 {
		res.sealFirst, _ = v[8].(int64)
	}
	return res, nil
}

// moveState keeps the state index in step with a change a script made. A failure only leaves
// the index stale, which List repairs. It also forgets what the history cache holds of a
// session that ended, and the view of a frozen one.
func (r *Redis) moveState(ctx context.Context, res scriptResult) {
	id := res.s.ID
	switch res.after {
	case StateRevoked, StateExpired:
		r.hist.drop(id) // it will not admit again
	case StateFrozen:
		r.hist.dropView(id, 0)
	}
	if res.before == res.after || res.before == "" {
		return
	}
	r.moveIndex(ctx, id, res.before, res.after)
}

// moveIndex moves session id from the index of state from to that of to. It is apart from
// moveState so that only a move pays for the pipeline's closure.
func (r *Redis) moveIndex(ctx context.Context, id string, from, to State) {
	_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.ZRem(ctx, r.stateKey(from), id)
		p.ZAdd(ctx, r.stateKey(to), redis.Z{Member: id})
		return nil
	})
	if err != nil {
		r.opts.Logger.Warn("session state index not updated; List will repair it", "session", id, "err", err)
	}
}

// metaFields are the meta hash fields the scripts' meta function answers, in its order.
var metaFields = [...]string{"a", "p", "l", "sc", "rm", "st", "why", "c", "e", "la", "i", "b", "n", "d", "r", "hl", "v", "ds", "th"}

// metaIndex is the position of each field of metaFields.
var metaIndex = func() map[string]int {
	m := make(map[string]int, len(metaFields))
	for i, f := range metaFields {
		m[f] = i
	}
	return m
}()

// Positions in metaFields of the fields parseMeta reads by name.
const (
	fAgent = iota
	fProfile
	fLabels
	fScope
	fRemoved
	fState
	fReason
	fCreated
	fExpires
	fActivity
	fIdle
	fBudget
	fCalls
	fDenied
	fRisk
	fHistLimit
	fVersion
	fDetect
	fTokenHash
)

// metaValues holds the meta fields of one answer by position in metaFields.
type metaValues struct {
	v    [len(metaFields)]string
	have [len(metaFields)]bool
}

// packed reports whether a script answered the meta hash as its meta function does ("#" then
// the values packed), rather than as HGETALL does (field, value, ...).
func packed(flat []any) bool { return len(flat) == 2 && flat[0] == "#" }

// unpack reads the values the meta function packed: a MessagePack array of strings, with nil
// or false for a missing field (see luaPrelude). The values share p's bytes.
func (f *metaValues) unpack(p string) error {
	bad := errors.New("meta answer is not a MessagePack array of strings")
	if p == "" {
		return bad
	}
	// bigEndian reads the big-endian unsigned integer of n bytes after p's first.
	bigEndian := func(n int) (int, bool) {
		if len(p) < 1+n {
			return 0, false
		}
		v := 0
		for _, c := range []byte(p[1 : 1+n]) {
			v = v<<8 | int(c)
		}
		p = p[1+n:]
		return v, true
	}
	var n int
	var ok bool
	switch c := p[0]; {
	case c&0xf0 == 0x90: // fixarray
		n, ok = int(c&0x0f), true
		p = p[1:]
	case c == 0xdc:
		n, ok = bigEndian(2)
	case c == 0xdd:
		n, ok = bigEndian(4)
	}
	if !ok {
		return bad
	}
	if n > len(metaFields) {
		return errors.New("meta answer holds more fields than known")
	}
	for i := range n {
		if p == "" {
			return bad
		}
		var l int
		switch c := p[0]; {
		case c == 0xc0 || c == 0xc2: // nil, false: no such field
			p = p[1:]
			continue
		case c&0xe0 == 0xa0: // fixstr
			l, ok = int(c&0x1f), true
			p = p[1:]
		case c == 0xd9 || c == 0xc4: // str8, bin8
			l, ok = bigEndian(1)
		case c == 0xda || c == 0xc5:
			l, ok = bigEndian(2)
		case c == 0xdb || c == 0xc6:
			l, ok = bigEndian(4)
		default:
			ok = false
		}
		if !ok || l > len(p) {
			return fmt.Errorf("meta answer malformed at field %s", metaFields[i])
		}
		f.v[i], f.have[i] = p[:l], true
		p = p[l:]
	}
	if p != "" {
		return bad
	}
	return nil
}

// parseMeta builds a session from the meta hash, as answered by HGETALL or by meta.
func parseMeta(id string, flat []any) (*Session, string, error) {
	var f metaValues
	if packed(flat) {
		if err := f.unpack(str(flat[1])); err != nil {
			return nil, "", fmt.Errorf("session %s: %w", id, err)
		}
	} else {
		for i := 0; i+1 < len(flat); i += 2 {
			// Result tags (t:<seq>) are not in metaFields: parseTags.
			if j, ok := metaIndex[str(flat[i])]; ok {
				f.v[j], f.have[j] = str(flat[i+1]), true
			}
		}
	}
	var firstErr error
	num := func(k int) int64 {
		n, err := strconv.ParseInt(f.v[k], 10, 64)
		if err != nil && firstErr == nil {
			firstErr = fmt.Errorf("session %s: field %s = %q: %w", id, metaFields[k], f.v[k], err)
		}
		return n
	}
	list := func(k int) []string {
		l, err := parseNames(f.v[k])
		if err != nil && firstErr == nil {
			firstErr = fmt.Errorf("session %s: field %s: %w", id, metaFields[k], err)
		}
		return l
	}
	s := &Session{
		ID:           id,
		Agent:        f.v[fAgent],
		Profile:      f.v[fProfile],
		Labels:       list(fLabels),
		Scope:        list(fScope),
		Removed:      list(fRemoved),
		State:        State(f.v[fState]),
		Reason:       f.v[fReason],
		Created:      time.UnixMilli(num(fCreated)),
		Expires:      time.UnixMilli(num(fExpires)),
		IdleTimeout:  time.Duration(num(fIdle)) * time.Millisecond,
		LastActivity: time.UnixMilli(num(fActivity)),
		Budget:       num(fBudget),
		Calls:        num(fCalls),
		Denied:       num(fDenied),
		HistoryLimit: int(num(fHistLimit)),
		Version:      num(fVersion),
	}
	risk, err := strconv.ParseFloat(f.v[fRisk], 64)
	if err != nil && firstErr == nil {
		firstErr = fmt.Errorf("session %s: field r = %q: %w", id, f.v[fRisk], err)
	}
	s.Risk = risk
	if f.have[fDetect] {
		s.Detect = []byte(f.v[fDetect])
	}
	return s, f.v[fTokenHash], firstErr
}

// parseNames decodes a JSON array of names as the meta hash holds it ("", "[]", "null" and
// "{}", as cjson writes an empty array, are empty). Arrays of plain strings, the usual case,
// are read here without encoding/json.
func parseNames(j string) ([]string, error) {
	if j == "" || j == "[]" || j == "{}" || j == "null" {
		return nil, nil
	}
	if len(j) >= 2 && j[0] == '[' && j[len(j)-1] == ']' && plainJSON(j) {
		n := strings.Count(j, `","`) + 1
		l := make([]string, 0, n)
		rest := j[1 : len(j)-1]
		for {
			if len(rest) < 2 || rest[0] != '"' {
				break
			}
			end := strings.IndexByte(rest[1:], '"') + 1
			if end == 0 {
				break
			}
			l = append(l, rest[1:end])
			rest = rest[end+1:]
			if rest == "" {
				return l, nil
			}
			if rest[0] != ',' {
				break
			}
			rest = rest[1:]
		}
	}
	var l []string
	if err := json.Unmarshal([]byte(j), &l); err != nil {
		return nil, err
	}
	return l, nil
}

// plainJSON reports whether j holds only printable ASCII without backslashes or spaces: its
// strings need no unescaping, and it has no whitespace between tokens.
func plainJSON(j string) bool {
	for i := 0; i < len(j); i++ {
		if c := j[i]; c <= ' ' || c >= 0x7f || c == '\\' {
			return false
		}
	}
	return true
}

// str is a Redis reply value as a string; go-redis answers bulk strings as string.
func str(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return fmt.Sprint(v)
}

// parseTags collects the t:<seq> result-tag fields of a meta hash.
func parseTags(flat []any) map[int64][]string {
	var tags map[int64][]string
	for i := 0; i+1 < len(flat); i += 2 {
		k := str(flat[i])
		if !strings.HasPrefix(k, "t:") {
			continue
		}
		seq, err := strconv.ParseInt(k[2:], 10, 64)
		var l []string
		if err != nil || json.Unmarshal([]byte(str(flat[i+1])), &l) != nil {
			continue
		}
		if tags == nil {
			tags = map[int64][]string{}
		}
		tags[seq] = l
	}
	return tags
}

// encodeEntry writes a history entry as a compact JSON array:
//
//	[ms since creation, server, tool, decision, args, name, labels, rules, result tags]
//
// with name "" when it is server + "__" + tool, 0 for empty args and lists, and trailing empty
// items left out. It returns the array without its first item, which commitScript prepends
// (only the script knows the creation time without another round trip). The seq is not
// stored: entries are appended one per commit, so it follows from the position.
func encodeEntry(rec CallRecord) string {
	name := rec.Name
	if name == rec.Server+"__"+rec.Tool {
		name = ""
	}
	// Trailing items that hold their empty value are left out: the array may end right after
	// the time.
	n := 8
	switch {
	case len(rec.ResultTags) > 0:
	case len(rec.Rules) > 0:
		n = 7
	case len(rec.Labels) > 0:
		n = 6
	case name != "":
		n = 5
	case len(rec.Args) > 0 && string(rec.Args) != "0" && string(rec.Args) != `""`:
		n = 4
	case rec.Decision != "":
		n = 3
	case rec.Tool != "":
		n = 2
	case rec.Server != "":
		n = 1
	default:
		n = 0
	}
	b := make([]byte, 0, 64+len(rec.Server)+len(rec.Tool)+len(rec.Decision)+len(rec.Args)+len(name))
	for i := range n {
		b = append(b, ',')
		switch i {
		case 0:
			b = appendJSONString(b, rec.Server)
		case 1:
			b = appendJSONString(b, rec.Tool)
		case 2:
			b = appendJSONString(b, rec.Decision)
		case 3:
			if len(rec.Args) == 0 {
				b = append(b, '0')
			} else {
				b = append(b, rec.Args...)
			}
		case 4:
			b = appendJSONString(b, name)
		case 5:
			b = appendJSONList(b, rec.Labels)
		case 6:
			b = appendJSONList(b, rec.Rules)
		case 7:
			b = appendJSONList(b, rec.ResultTags)
		}
	}
	b = append(b, ']')
	return string(b)
}

// appendJSONString appends s as encoding/json writes it: directly when it needs no escape,
// else through encoding/json.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			j, _ := json.Marshal(s)
			return append(b, j...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendJSONList appends l as a JSON array of strings, or 0 when it is empty.
func appendJSONList(b []byte, l []string) []byte {
	if len(l) == 0 {
		return append(b, '0')
	}
	b = append(b, '[')
	for i, s := range l {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, s)
	}
	return append(b, ']')
}
