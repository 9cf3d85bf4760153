// Package audit records what toolgate decided and what operators did, as
// structured events in a durable stream that other systems can follow.
package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
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
	// Tap sees every recorded event, after it was written or queued (for
	// example to push revocations to Shared Signals receivers). It must
	// not block. Nil: none.
	Tap func(Event)
	// OnError is called for every event that could not be written. Nil: ignored (it is logged).
	OnError func(Event, error)
}

// Recorder writes events to a sink and to the log. Events that must be
// stored before the agent gets its answer (deny, revoke, operator
// actions) are written synchronously; the others are queued and written
// in batches by one goroutine, so that allowed calls do not wait for the
// sink: a crash loses at most the queued allow events.
type Recorder struct {
	sink Sink
	log  *slog.Logger
	opts Options
	// queue holds pointers: a buffer of QueueSize events would be over a
	// megabyte, kept and scanned by the garbage collector for the life of
	// the process however few events wait.
	queue chan *Event
	done  chan struct{}
	once  sync.Once

	mu     sync.RWMutex // guards queue against Close
	closed bool
}

// NewRecorder starts a recorder over sink; sink may be nil (log only).
// Close flushes it.
func NewRecorder(sink Sink, opts Options) *Recorder {
	if opts.QueueSize <= 0 {
		opts.QueueSize = 4096
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = 256
	}
	r := &Recorder{sink: sink, log: opts.Logger, opts: opts, queue: make(chan *Event, opts.QueueSize), done: make(chan struct{})}
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
	if !sync && r.enqueue(&e) {
		return nil
	}
	if err := r.sink.Write(ctx, []Event{e}); err != nil {
		r.failed([]Event{e}, err)
		return fmt.Errorf("audit %s event: %w", e.Kind, err)
	}
	return nil
}

// enqueue queues e unless the queue is full or closed.
func (r *Recorder) enqueue(e *Event) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return false
	}
	select {
	case r.queue <- e:
		return true
	default: // full: the caller writes now rather than drop
		return false
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
	var batch []Event // grows to the largest batch written, at most BatchSize
	for e := range r.queue {
		batch = append(batch[:0], *e)
	fill:
		for len(batch) < r.opts.BatchSize {
			select {
			case e, ok := <-r.queue:
				if !ok {
					break fill
				}
				batch = append(batch, *e)
			default:
				break fill
			}
		}
		// Queued events outlive the request that made them.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := r.sink.Write(ctx, batch); err != nil {
			r.failed(batch, err)
		}
		cancel()
		clear(batch) // let the written events' strings go
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
		<-r.done
		if r.sink != nil {
			err = r.sink.Close()
		}
	})
	return err
}

// ErrClosed is returned by sinks used after Close.
var ErrClosed = errors.New("audit sink closed")
