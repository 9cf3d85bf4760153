// Package audit records what toolgate decided and what operators did, as
// structured events in a durable stream that other systems can follow.
package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Kind is what an event records.
type Kind string

// Event kinds.
const (
	KindDecision     Kind = "decision"      // a tool call was decided
	KindApproval     Kind = "approval"      // a person approved or rejected a call
	KindNarrow       Kind = "narrow"        // tools were taken from a session
	KindFreeze       Kind = "freeze"        // a session was frozen
	KindResume       Kind = "resume"        // a frozen session was resumed
	KindRevoke       Kind = "revoke"        // a session was revoked (by policy or an operator)
	KindPolicyReload Kind = "policy_reload" // the policies were reloaded (or a reload failed)
)

// Event is one audit record. Argument values are never part of it.
type Event struct {
	Time    time.Time `json:"time"`
	Kind    Kind      `json:"kind"`
	Session string    `json:"session,omitempty"`
	Agent   string    `json:"agent,omitempty"`
	Profile string    `json:"profile,omitempty"`
	// Tool is the namespaced tool of a decision or approval.
	Tool string `json:"tool,omitempty"`
	// Seq numbers the call in its session.
	Seq      int64    `json:"seq,omitempty"`
	Decision string   `json:"decision,omitempty"`
	Rules    []string `json:"rules,omitempty"`
	Flags    []string `json:"flags,omitempty"`
	Risk     float64  `json:"risk,omitempty"`
	// Forwarded is true when a decided call went to its upstream.
	Forwarded bool `json:"forwarded,omitempty"`
	// Approved is the outcome of an approval.
	Approved *bool `json:"approved,omitempty"`
	// Reason of a revoke, freeze or refused approval.
	Reason string `json:"reason,omitempty"`
	// Actor is who acted: "policy", "operator", an approver's name.
	Actor string `json:"actor,omitempty"`
	// Removed are what a narrow took away (tool globs, "label:x").
	Removed []string `json:"removed,omitempty"`
	// Count is how many sessions an agent-wide revoke ended.
	Count int `json:"count,omitempty"`
	// PolicyVersion is the policy set in force after a reload.
	PolicyVersion string `json:"policy_version,omitempty"`
	// Error says what went wrong (a failed reload).
	Error string `json:"error,omitempty"`
	// TraceID links the event to its trace, when traced.
	TraceID string `json:"trace_id,omitempty"`
}

// Sink stores events durably. Write returns once the events are stored
// (as far as the sink can tell: a Redis reply, an fsync).
type Sink interface {
	Write(ctx context.Context, events []Event) error
	Close() error
}

// Options tune a Recorder.
type Options struct {
	// Logger receives every event as an "audit" log line. Nil: no log.
	Logger *slog.Logger
	// QueueSize bounds the events waiting for an asynchronous write;
	// beyond it Record writes synchronously. Default 4096.
	QueueSize int
	// BatchSize bounds one asynchronous write. Default 256.
	BatchSize int
	// Linger is how long the writer waits for more events once the queue
	// is empty, so that one write (one round trip to Redis) carries the
	// events of several calls rather than one. A synchronous Record, a
	// full batch or Close ends the wait. Default 5ms; negative: no wait.
	Linger time.Duration
	// Tap sees every recorded event, after it was written or queued (for
	// example to push revocations to Shared Signals receivers). It must
	// not block. Nil: none.
	Tap func(Event)
	// OnError is called for every event that could not be written. Nil: ignored (it is logged).
	OnError func(Event, error)
}

// defaultLinger is short beside a person reading the stream, and as long
// as ten allowed calls of one client (a tools/call takes about 0.5 ms), or
// many more at higher concurrency, so that their events share a write.
const defaultLinger = 5 * time.Millisecond

// Recorder writes events to a sink and to the log. Events that must be
// stored before the agent gets its answer (deny, revoke, operator
// actions) are written synchronously; the others are queued and written
// in batches by one goroutine, so that allowed calls do not wait for the
// sink: a crash loses at most the queued allow events. Synchronous events
// go through the same queue, behind those queued before them, so that the
// sink gets every event in the order it was recorded; their writer sends
// them at once, with whatever waited before them.
type Recorder struct {
	sink Sink
	log  *slog.Logger
	opts Options
	// queue holds pointers: a buffer of QueueSize events would be over a
	// megabyte, kept and scanned by the garbage collector for the life of
	// the process however few events wait.
	queue chan *entry
	// wake ends the writer's linger: a synchronous event, a full batch or
	// Close is waiting.
	wake chan struct{}
	// lingering is how many events the writer holds while it lingers (0
	// otherwise): with those queued, they make a full batch.
	lingering atomic.Int64
	done      chan struct{}
	once      sync.Once

	mu     sync.RWMutex // guards queue against Close
	closed bool
}

// entry is a queued event.
type entry struct {
	Event
	// stored receives the write's result for a synchronous Record; nil
	// for a queued one.
	stored chan error
}

// entries recycles the entries of queued events, which are copied into
// the writer's batch as soon as it takes them.
var entries = sync.Pool{New: func() any { return new(entry) }}

// NewRecorder starts a recorder over sink; sink may be nil (log only).
// Close flushes it.
func NewRecorder(sink Sink, opts Options) *Recorder {
	if opts.QueueSize <= 0 {
		opts.QueueSize = 4096
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = 256
	}
	if opts.Linger == 0 {
		opts.Linger = defaultLinger
	}
	r := &Recorder{sink: sink, log: opts.Logger, opts: opts, queue: make(chan *entry, opts.QueueSize),
		wake: make(chan struct{}, 1), done: make(chan struct{})}
	go r.run()
	return r
}

// Record stores e. With sync, it returns after the sink stored it (or
// failed to); otherwise it queues e and returns at once.
func (r *Recorder) Record(ctx context.Context, e Event, sync bool) error {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	r.logEvent(ctx, e)
	if r.opts.Tap != nil {
		defer r.opts.Tap(e)
	}
	if r.sink == nil {
		return nil
	}
	var err error
	if sync {
		err = r.recordSync(ctx, e)
	} else {
		ent := entries.Get().(*entry)
		ent.Event = e
		if r.enqueue(ent) {
			return nil
		}
		*ent = entry{}
		entries.Put(ent)
		err = r.write(ctx, e)
	}
	if err != nil {
		return fmt.Errorf("audit %s event: %w", e.Kind, err)
	}
	return nil
}

// recordSync queues e and waits for the writer to store it, or writes it
// itself when the queue is full or closed.
func (r *Recorder) recordSync(ctx context.Context, e Event) error {
	ent := &entry{Event: e, stored: make(chan error, 1)}
	if !r.enqueue(ent) {
		return r.write(ctx, e)
	}
	r.wakeWriter()
	return <-ent.stored
}

// write stores e now, bypassing the queue.
func (r *Recorder) write(ctx context.Context, e Event) error {
	batch := []Event{e}
	err := r.sink.Write(ctx, batch)
	if err != nil {
		r.failed(batch, err)
	}
	return err
}

// enqueue queues e unless the queue is full or closed.
func (r *Recorder) enqueue(e *entry) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return false
	}
	select {
	case r.queue <- e:
		if len(r.queue)+int(r.lingering.Load()) >= r.opts.BatchSize {
			r.wakeWriter()
		}
		return true
	default: // full: the caller writes now rather than drop
		return false
	}
}

// wakeWriter ends the writer's linger, if it lingers.
func (r *Recorder) wakeWriter() {
	select {
	case r.wake <- struct{}{}:
	default: // a wake-up is pending already
	}
}

func (r *Recorder) logEvent(ctx context.Context, e Event) {
	if r.log == nil || !r.log.Enabled(ctx, slog.LevelInfo) {
		return
	}
	attrs := []slog.Attr{slog.String("kind", string(e.Kind))}
	add := func(k, v string) {
		if v != "" {
			attrs = append(attrs, slog.String(k, v))
		}
	}
	add("session", e.Session)
	add("agent", e.Agent)
	add("profile", e.Profile)
	add("tool", e.Tool)
	add("decision", e.Decision)
	add("reason", e.Reason)
	add("actor", e.Actor)
	add("policy_version", e.PolicyVersion)
	add("error", e.Error)
	add("trace_id", e.TraceID)
	if len(e.Rules) > 0 {
		attrs = append(attrs, slog.Any("rules", e.Rules))
	}
	if len(e.Flags) > 0 {
		attrs = append(attrs, slog.Any("flags", e.Flags))
	}
	if e.Risk != 0 {
		attrs = append(attrs, slog.Float64("risk", e.Risk))
	}
	if e.Approved != nil {
		attrs = append(attrs, slog.Bool("approved", *e.Approved))
	}
	if len(e.Removed) > 0 {
		attrs = append(attrs, slog.Any("removed", e.Removed))
	}
	r.log.LogAttrs(ctx, slog.LevelInfo, "audit", slog.Attr{Key: "audit", Value: slog.GroupValue(attrs...)})
}

func (r *Recorder) failed(events []Event, err error) {
	for _, e := range events {
		if r.log != nil {
			r.log.Error("audit event not stored", "kind", e.Kind, "session", e.Session, "err", err)
		}
		if r.opts.OnError != nil {
			r.opts.OnError(e, err)
		}
	}
}

func (r *Recorder) run() {
	defer close(r.done)
	var (
		batch  []Event      // grows to the largest batch written, at most BatchSize
		stored []chan error // of the synchronous events in batch
	)
	add := func(ent *entry) {
		batch = append(batch, ent.Event)
		if ent.stored != nil {
			stored = append(stored, ent.stored)
			return
		}
		*ent = entry{}
		entries.Put(ent)
	}
	// take adds the queued events to the batch, up to BatchSize, without
	// waiting. It reports whether the queue is closed and empty.
	take := func() (closed bool) {
		for len(batch) < r.opts.BatchSize {
			select {
			case ent, ok := <-r.queue:
				if !ok {
					return true
				}
				add(ent)
			default:
				return false
			}
		}
		return false
	}
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	for {
		// Wait for an event; a wake-up left from the last batch is stale.
		select {
		case <-r.wake:
		default:
		}
		ent, ok := <-r.queue
		if !ok {
			return
		}
		add(ent)
		closed := take()
		// The writer sleeps through the linger rather than wake for each
		// event that comes meanwhile: that would be a goroutine switch per
		// event.
		if !closed && len(stored) == 0 && len(batch) < r.opts.BatchSize && r.opts.Linger > 0 {
			r.lingering.Store(int64(len(batch)))
			// Events queued before the store above woke no one.
			if len(r.queue)+len(batch) < r.opts.BatchSize {
				linger.Reset(r.opts.Linger)
				select {
				case <-linger.C:
				case <-r.wake:
					linger.Stop()
				}
			}
			r.lingering.Store(0)
			take()
		}
		// Queued events outlive the request that made them.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := r.sink.Write(ctx, batch)
		cancel()
		if err != nil {
			r.failed(batch, err)
		}
		for _, c := range stored {
			c <- err
		}
		clear(batch) // let the written events' strings go
		clear(stored)
		batch, stored = batch[:0], stored[:0]
	}
}

// Close writes the queued events and closes the sink.
func (r *Recorder) Close() error {
	var err error
	r.once.Do(func() {
		r.mu.Lock()
		r.closed = true
		close(r.queue)
		r.mu.Unlock()
		r.wakeWriter()
		<-r.done
		if r.sink != nil {
			err = r.sink.Close()
		}
	})
	return err
}

// ErrClosed is returned by sinks used after Close.
var ErrClosed = errors.New("audit sink closed")
