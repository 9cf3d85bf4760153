package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// DefaultGCPercent is the garbage collector's target of toolgate serve
// unless runtime.gc_percent or GOGC says otherwise. With 64 agents calling
// (toolgate bench, Redis store, 50 policies, detectors, tracing, audit),
// Go's 100 let the gateway hold about 45 MiB of heap and stacks; 75 holds
// about 40 for some 3% more CPU per call, 50 about 33 for some 20% more.
const DefaultGCPercent = 75

// Runtime tunes the Go runtime of toolgate serve: how much memory it may
// hold against how much CPU its garbage collector spends, and on how many
// cores it runs. The GOMEMLIMIT, GOGC and GOMAXPROCS environment variables,
// when set, win over the keys.
type Runtime struct {
	// MemoryLimit is a soft limit on the memory the runtime holds, in
	// GOMEMLIMIT's syntax ("512MiB", "2GiB", a number of bytes) or "off".
	// Near it the garbage collector works harder rather than grow. Default:
	// 90% of the container's memory limit (cgroup) when there is one, else off.
	MemoryLimit string `yaml:"memory_limit"`
	// GCPercent is GOGC: how far, in percent of the live heap, the heap
	// grows before the next collection. Default DefaultGCPercent.
	GCPercent int `yaml:"gc_percent"`
	// MaxProcs is GOMAXPROCS: how many threads run Go code at once. Default
	// Go's: the container's CPU limit, or every core. A gateway that shares
	// a few cores with the agents, tool servers or Redis it serves spends
	// less CPU per call with fewer (docs/performance.md).
	MaxProcs int `yaml:"max_procs"`

	limit int64 // MemoryLimit in bytes once validated; 0: default, -1: off
}

// MemoryLimitBytes is memory_limit in bytes: set is false when it was not
// given, and limit is negative when it is "off".
func (r Runtime) MemoryLimitBytes() (limit int64, set bool) {
	return r.limit, r.limit != 0
}

func (r *Runtime) validate() error {
	var errs []error
	switch s := strings.TrimSpace(r.MemoryLimit); s {
	case "":
	case "off":
		r.limit = -1
	default:
		n, err := parseBytes(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("runtime.memory_limit: %q: %v: write a size such as 512MiB or 2GiB, or off", r.MemoryLimit, err))
		} else {
			r.limit = n
		}
	}
	switch {
	case r.GCPercent == 0:
		r.GCPercent = DefaultGCPercent
	case r.GCPercent < 0:
		errs = append(errs, fmt.Errorf("runtime.gc_percent: %d is negative: give a percentage such as 100, or leave it out for %d", r.GCPercent, DefaultGCPercent))
	}
	if r.MaxProcs < 0 {
		errs = append(errs, fmt.Errorf("runtime.max_procs: %d is negative: give a number of cores, or leave it out for Go's default", r.MaxProcs))
	}
	return errors.Join(errs...)
}

// parseBytes reads a size in GOMEMLIMIT's syntax: a number of bytes, with
// an optional unit B, KiB, MiB, GiB or TiB.
func parseBytes(s string) (int64, error) {
	units := []struct {
		suffix string
		shift  uint
	}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}, {"B", 0}}
	shift := uint(0)
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			s, shift = num, u.shift
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	switch {
	case err != nil:
		return 0, errors.New("not a number of bytes")
	case n <= 0:
		return 0, errors.New("not above zero")
	case n > (1<<63-1)>>shift:
		return 0, errors.New("too large")
	}
	return n << shift, nil
}
