package sessions

import (
	"context"
	"log/slog"
	"time"
)

// Reaper ends sessions when their time comes rather than at their next call: it calls
// Store.Reap at each session's expiry (and at least every Interval, for sessions created on
// other replicas), so that expired events reach the gateway, which then cancels the session's
// in-flight calls and streams.
type Reaper struct {
	Store Store
	// Clock schedules the reaps. Nil: the system clock. Give it the store's clock.
	Clock Clock
	// Interval is the longest wait between reaps. Zero: one second.
	Interval time.Duration
	// Logger receives reap errors (the store unreachable, say). Nil: discard.
	Logger *slog.Logger
}

// Run reaps until ctx ends, then returns ctx's error. Store errors are logged and retried at
// the next interval: expiry is enforced on every read anyway, the reaper only makes it prompt.
func (r *Reaper) Run(ctx context.Context) error {
	clock := orSystem(r.Clock)
	interval := r.Interval
	if interval <= 0 {
		interval = time.Second
	}
	log := r.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	wake := make(chan struct{}, 1)
	for {
		next, err := r.Store.Reap(ctx)
		if err != nil && ctx.Err() == nil {
			log.Warn("reap sessions", "err", err)
		}
		wait := interval
		if !next.IsZero() {
			wait = min(wait, max(next.Sub(clock.Now()), 0))
		}
		t := clock.AfterFunc(wait, func() {
			select {
			case wake <- struct{}{}:
			default:
			}
		})
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-wake:
		}
	}
}
