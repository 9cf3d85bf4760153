package gateway

import (
	"sync"
	"sync/atomic"

	"github.com/toolgate/toolgate/policies"
)

// Metrics are the gateway's own counters.
type Metrics struct {
	storeErrors atomic.Int64

	mu        sync.Mutex
	decisions map[policies.Action]int64
}

func (m *Metrics) count(a policies.Action) {
	m.mu.Lock()
	if m.decisions == nil {
		m.decisions = map[policies.Action]int64{}
	}
	m.decisions[a]++
	m.mu.Unlock()
}

// MetricsSnapshot is a copy of the counters.
type MetricsSnapshot struct {
	StoreErrors int64                     `json:"store_errors"`
	Decisions   map[policies.Action]int64 `json:"decisions"`
}

// Snapshot copies the counters.
func (m *Metrics) Snapshot() MetricsSnapshot {
	m.mu.Lock()
	defer m.mu.Unlock()
	d := make(map[policies.Action]int64, len(m.decisions))
	for k, v := range m.decisions {
		d[k] = v
	}
	return MetricsSnapshot{StoreErrors: m.storeErrors.Load(), Decisions: d}
}
