package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"sort"
	"sync"
	"time"
)

// PendingApproval is a call held until a person approves or rejects it.
type PendingApproval struct {
	ID        string          `json:"id"`
	SessionID string          `json:"session"`
	Agent     string          `json:"agent"`
	Tool      string          `json:"tool"`
	Args      json.RawMessage `json:"args,omitempty"`
	Rule      string          `json:"rule,omitempty"`
	Message   string          `json:"message,omitempty"`
	Created   time.Time       `json:"created"`
	Deadline  time.Time       `json:"deadline"`
}

// Approvals holds calls that a rule sent for approval. A held call waits
// at most Timeout, then counts as rejected. Approvals live in the replica
// holding the call.
type Approvals struct {
	Timeout time.Duration // default 5m
	Now     func() time.Time

	mu      sync.Mutex
	pending map[string]*heldCall
}

type heldCall struct {
	PendingApproval
	answer chan approvalAnswer
}

type approvalAnswer struct {
	approved bool
	by       string
}

// ErrNoSuchApproval: the approval id is unknown, or already decided.
var ErrNoSuchApproval = errors.New("no pending approval with that id")

// Wait holds a call until it is approved, rejected, timed out or ctx ends.
// It returns whether it was approved and, if not, why (for the agent).
func (a *Approvals) Wait(ctx context.Context, p PendingApproval) (bool, string) {
	timeout := a.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	p.ID = hex.EncodeToString(id[:])
	p.Created = now()
	p.Deadline = p.Created.Add(timeout)
	h := &heldCall{PendingApproval: p, answer: make(chan approvalAnswer, 1)}
	a.mu.Lock()
	if a.pending == nil {
		a.pending = map[string]*heldCall{}
	}
	a.pending[p.ID] = h
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.pending, p.ID)
		a.mu.Unlock()
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case ans := <-h.answer:
		if ans.approved {
			return true, "approved by " + ans.by
		}
		return false, "rejected by " + ans.by
	case <-timer.C:
		return false, "timed out"
	case <-ctx.Done():
		return false, "cancelled"
	}
}

// Resolve approves or rejects a pending call.
func (a *Approvals) Resolve(id string, approve bool, by string) error {
	a.mu.Lock()
	h, ok := a.pending[id]
	if ok {
		delete(a.pending, id)
	}
	a.mu.Unlock()
	if !ok {
		return ErrNoSuchApproval
	}
	if by == "" {
		by = "an operator"
	}
	h.answer <- approvalAnswer{approved: approve, by: by}
	return nil
}

// List returns the pending approvals, oldest first.
func (a *Approvals) List() []PendingApproval {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]PendingApproval, 0, len(a.pending))
	for _, h := range a.pending {
		out = append(out, h.PendingApproval)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out
}
