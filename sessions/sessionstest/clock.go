// Package sessionstest holds what tests of session stores and their users share: the contract
// suite every Store must pass, a clock tests move by hand, and a real redis-server per test.
package sessionstest

import (
	"sync"
	"time"

	"github.com/toolgate/toolgate/sessions"
)

// Clock is a sessions.Clock that moves only when told. Timers due by then run, each in its own
// goroutine, when Advance or Set passes their time.
type Clock struct {
	mu     sync.Mutex
	now    time.Time
	timers map[*timer]struct{}
}

var _ sessions.Clock = (*Clock)(nil)

// NewClock returns a clock standing at start.
func NewClock(start time.Time) *Clock {
	return &Clock{now: start, timers: make(map[*timer]struct{})}
}

type timer struct {
	c  *Clock
	at time.Time
	f  func()
}

// Now implements sessions.Clock.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc implements sessions.Clock.
func (c *Clock) AfterFunc(d time.Duration, f func()) sessions.Timer {
	c.mu.Lock()
	t := &timer{c: c, at: c.now.Add(d), f: f}
	if d <= 0 {
		c.mu.Unlock()
		go f()
		return t
	}
	c.timers[t] = struct{}{}
	c.mu.Unlock()
	return t
}

// Stop implements sessions.Timer.
func (t *timer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	_, ok := t.c.timers[t]
	delete(t.c.timers, t)
	return ok
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) { c.Set(c.Now().Add(d)) }

// Set moves the clock to now and runs the timers due by then.
func (c *Clock) Set(now time.Time) {
	c.mu.Lock()
	c.now = now
	var due []func()
	for t := range c.timers {
		if !t.at.After(now) {
			due = append(due, t.f)
			delete(c.timers, t)
		}
	}
	c.mu.Unlock()
	for _, f := range due {
		go f()
	}
}

// Timers reports how many timers are pending, so a test can wait until a goroutine has armed
// its timer before moving the clock.
func (c *Clock) Timers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}
