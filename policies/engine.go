package policies

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Config is the policies section of the toolgate config file.
type Config struct {
	// Paths are policy files or folders (searched recursively).
	Paths []string `yaml:"paths"`
	// CostLimit and CallBudget: see Options. Zero means the default.
	CostLimit  uint64 `yaml:"cost_limit"`
	CallBudget uint64 `yaml:"call_budget"`
	// ReloadInterval is how often the files are polled for changes, for
	// example "2s". Empty or "0s" turns polling off (Reload still works).
	ReloadInterval string `yaml:"reload_interval"`
}

// Validate reports mistakes in c with how to fix them.
func (c Config) Validate() error {
	var errs []error
	if len(c.Paths) == 0 {
		errs = append(errs, errors.New("policies.paths is empty: list at least one policy file or folder"))
	}
	for i, p := range c.Paths {
		if p == "" {
			errs = append(errs, fmt.Errorf("policies.paths[%d] is empty: remove it or give a path", i))
		}
	}
	if c.CallBudget != 0 && c.CostLimit > c.CallBudget {
		errs = append(errs, fmt.Errorf("policies.cost_limit (%d) is above call_budget (%d): raise call_budget or lower cost_limit", c.CostLimit, c.CallBudget))
	}
	if _, err := c.Interval(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Interval parses ReloadInterval.
func (c Config) Interval() (time.Duration, error) {
	if c.ReloadInterval == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(c.ReloadInterval)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("policies.reload_interval %q is not a duration: write it like \"2s\" or \"1m\"", c.ReloadInterval)
	}
	return d, nil
}

// Options returns the evaluation options of c.
func (c Config) Options() Options {
	return Options{CostLimit: c.CostLimit, CallBudget: c.CallBudget}
}

// Status is the state of an Engine's policy set, for the admin API.
type Status struct {
	Version    string    `json:"version"`              // version of the live set
	Files      []string  `json:"files"`                // files of the live set
	Rules      int       `json:"rules"`                // rules in the live set
	LoadedAt   time.Time `json:"loaded_at"`            // when the live set was swapped in
	LastReload time.Time `json:"last_reload"`          // when Reload last ran
	LastError  string    `json:"last_error,omitempty"` // error of the last Reload, if it failed
	Reloads    int       `json:"reloads"`              // successful swaps since start
	Failures   int       `json:"failures"`             // failed reloads since start
}

// ReloadEvent tells the OnReload hook what a Reload did.
type ReloadEvent struct {
	Changed bool   // a new set was swapped in
	Version string // version of the live set after the reload
	Err     error  // why the reload failed; the old set stays live
}

// Engine holds the live policy set and replaces it on Reload. Decide and
// Set are safe to call at any time from any goroutine.
type Engine struct {
	paths []string
	opts  Options
	log   *slog.Logger
	now   func() time.Time
	// onReload runs after every Reload, outside any lock.
	onReload func(ReloadEvent)

	live     atomic.Pointer[Set]
	reloadMu sync.Mutex // one Reload at a time
	statusMu sync.Mutex
	status   Status

	// failedHash and failedErr remember the last content that did not
	// compile, so that polling does not recompile and re-log it. Guarded
	// by reloadMu.
	failedHash string
	failedErr  error
}

// EngineOptions configure an Engine. Every field may be left zero.
type EngineOptions struct {
	Options
	// Logger receives reload results; nil discards them.
	Logger *slog.Logger
	// Now is the clock for Status times; nil means time.Now.
	Now func() time.Time
	// OnReload runs after every Reload (for metrics); nil means none. It
	// must not call Reload.
	OnReload func(ReloadEvent)
}

// NewEngine loads the policies under paths. It fails if they do not load:
// a gateway must not start without its policies.
func NewEngine(paths []string, o EngineOptions) (*Engine, error) {
	e := &Engine{paths: paths, opts: o.Options, log: o.Logger, now: o.Now, onReload: o.OnReload}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.now == nil {
		e.now = time.Now
	}
	set, err := Load(paths, e.opts)
	if err != nil {
		return nil, err
	}
	e.live.Store(set)
	t := e.now()
	e.status = Status{Version: set.Version(), Files: set.Files(), Rules: len(set.rules), LoadedAt: t, LastReload: t}
	return e, nil
}

// Set returns the live policy set.
func (e *Engine) Set() *Set { return e.live.Load() }

// Decide evaluates in against the live set.
func (e *Engine) Decide(in *Input) Decision { return e.live.Load().Decide(in) }

// Reload recompiles the policies from the engine's paths. If they are
// unchanged (same content hash) it does nothing; if they compile it swaps
// the new set in; on any error it keeps the old set and returns the error.
func (e *Engine) Reload() (changed bool, err error) {
	e.reloadMu.Lock()
	ev := e.reload()
	e.reloadMu.Unlock()
	if e.onReload != nil {
		e.onReload(ev)
	}
	return ev.Changed, ev.Err
}

func (e *Engine) reload() ReloadEvent {
	old := e.live.Load()
	ev := ReloadEvent{Version: old.Version()}
	srcs, err := readSources(e.paths)
	var files []SourceFile
	if err == nil {
		files = make([]SourceFile, len(srcs))
		for i, s := range srcs {
			files[i] = SourceFile{Name: s.path, Data: s.data}
		}
		hash := hashSources(files)
		if hash == old.Version() {
			e.record(nil, nil)
			return ev
		}
		if hash == e.failedHash {
			ev.Err = e.failedErr
			e.record(nil, ev.Err)
			return ev
		}
		var set *Set
		if set, err = Compile(files, e.opts); err != nil {
			e.failedHash = hash
		} else {
			e.failedHash, e.failedErr = "", nil
			e.live.Store(set)
			e.record(set, nil)
			e.log.Info("policies reloaded", "version", set.Version(), "rules", len(set.rules), "previous", old.Version())
			ev.Changed, ev.Version = true, set.Version()
			return ev
		}
	}
	ev.Err = fmt.Errorf("reload policies: %w", err)
	if e.failedHash != "" {
		e.failedErr = ev.Err
	}
	e.record(nil, ev.Err)
	e.log.Error("policy reload failed; keeping the live set", "version", old.Version(), "err", ev.Err)
	return ev
}

func (e *Engine) record(set *Set, err error) {
	e.statusMu.Lock()
	defer e.statusMu.Unlock()
	t := e.now()
	e.status.LastReload = t
	e.status.LastError = ""
	switch {
	case err != nil:
		e.status.LastError = err.Error()
		e.status.Failures++
	case set != nil:
		e.status.Version, e.status.Files, e.status.Rules = set.Version(), set.Files(), len(set.rules)
		e.status.LoadedAt = t
		e.status.Reloads++
	}
}

// Status returns the engine's reload status.
func (e *Engine) Status() Status {
	e.statusMu.Lock()
	defer e.statusMu.Unlock()
	s := e.status
	s.Files = append([]string(nil), s.Files...)
	return s
}

// Watch polls the policy files every interval and reloads them when their
// content changes, until ctx is done. A failed reload is logged once per
// distinct error and retried on the next tick.
func (e *Engine) Watch(ctx context.Context, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			// Reload hashes the files and returns at once when nothing
			// changed; reading a policy folder is cheap next to the
			// interval, and a hash cannot miss an edit as mtimes can.
			_, _ = e.Reload()
		}
	}
}
