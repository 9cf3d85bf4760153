package sessions

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNotReplicated marks a revoke or freeze that the Redis master committed but that fewer
// replicas than asked confirmed within the wait: the session is already revoked (or frozen)
// on the master, but a failover right now could bring it back. Revoke again, or check the
// replicas.
var ErrNotReplicated = errors.New("not confirmed by enough Redis replicas")

// WaitOptions make a revoke or freeze wait until Redis replicas hold it, so that a failover
// (Sentinel promoting a replica) cannot bring the session back. Redis replicates
// asynchronously: without the wait, a master that dies right after acknowledging a revoke can
// lose it.
type WaitOptions struct {
	// Replicas is how many replicas must confirm (WAIT numreplicas). Zero: no wait.
	Replicas int
	// Timeout bounds the wait; it must stay below the client's read timeout, since the
	// WAIT reply is read with it. Zero: 100ms.
	Timeout time.Duration
}

// DefaultWaitTimeout bounds the replication wait when WaitOptions.Timeout is zero.
const DefaultWaitTimeout = 100 * time.Millisecond

// awaitReplicas makes sure the ending change of subject (a session, or an agent's sessions)
// reached r.wait.Replicas replicas,
// when the store was configured to wait. WAIT counts only the writes of the connection it
// runs on, and a pooled client may run it on another one: so it is pipelined (one
// connection) behind a small write of its own to the session's slot, which the replication
// stream orders after the change.
// slot is the hash tag the small write goes under (the session id, or the agent).
func (r *Redis) awaitReplicas(ctx context.Context, step, subject, slot string) error {
	w := r.wait
	if w.Replicas <= 0 {
		return nil
	}
	timeout := w.Timeout
	if timeout <= 0 {
		timeout = DefaultWaitTimeout
	}
	var n *redis.IntCmd
	_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, r.prefix+":{"+slot+"}:w", "1", 10*time.Second)
		// Pipeliner has no Wait method; the reply is read with the client's read timeout.
		n = redis.NewIntCmd(ctx, "wait", w.Replicas, timeout.Milliseconds())
		return p.Process(ctx, n)
	})
	if err != nil {
		return fmt.Errorf("%s: %s is %s on the Redis master, but waiting for %d replica(s) failed: %w: %w",
			step, subject, ended(step), w.Replicas, ErrNotReplicated, err)
	}
	if got := n.Val(); got < int64(w.Replicas) {
		return fmt.Errorf("%s: %s is %s on the Redis master, but only %d of %d replica(s) confirmed it within %v; a failover now could undo it: revoke again or check the replicas: %w",
			step, subject, ended(step), got, w.Replicas, timeout, ErrNotReplicated)
	}
	return nil
}

// warnUnreplicated logs a replication wait that failed after a call's decision revoked or
// froze its session: the call is refused either way, so the agent's answer does not change.
func (r *Redis) warnUnreplicated(err error) {
	if err != nil {
		r.opts.Logger.Warn("session change not confirmed by Redis replicas", "err", err)
	}
}

// ended names the state a step leaves the session in.
func ended(step string) string {
	if step == "freeze" {
		return "frozen"
	}
	if step == "commit call" {
		return "revoked or frozen"
	}
	return "revoked"
}
