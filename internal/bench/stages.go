package bench

import (
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	collector "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/toolgate/toolgate/internal/telemetry"
)

// Stages is where the wall time of the gateway's tools/calls went, from
// the spans it exported during the gateway phases of one concurrency level:
// the median per call of each stage.
type Stages struct {
	Clients int
	Calls   int           // calls whose request span arrived
	Call    time.Duration // the whole request, as the gateway saw it
	Auth    time.Duration // authentication
	Admit   time.Duration // admission: session store, detectors and policy
	Policy  time.Duration // the policy evaluation inside admission
	Store   time.Duration // admission without policy: session store and detectors
	Up      time.Duration // the upstream call, the upstream's own time included
	Rest    time.Duration // the rest: HTTP and JSON-RPC edge, result annotation, telemetry
}

// callSpans are the durations of one call's spans.
type callSpans struct {
	start                         time.Time // of the request span
	call, auth, admit, policy, up time.Duration
	isCall                        bool
}

// stageCollector is an OTLP/HTTP trace receiver that keeps, per trace, the
// durations of the stage spans of a tools/call.
type stageCollector struct {
	mu     sync.Mutex
	traces map[string]*callSpans
	last   time.Time // when the last export arrived
	bad    int       // exports it could not decode
}

func newStageCollector() *stageCollector {
	return &stageCollector{traces: map[string]*callSpans{}}
}

func (c *stageCollector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	data, err := io.ReadAll(body)
	var req collector.ExportTraceServiceRequest
	if err == nil {
		err = proto.Unmarshal(data, &req)
	}
	if err != nil {
		c.mu.Lock()
		c.bad++
		c.mu.Unlock()
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			for _, sp := range ss.Spans {
				c.add(sp.TraceId, sp.Name, time.Unix(0, int64(sp.StartTimeUnixNano)),
					time.Duration(sp.EndTimeUnixNano-sp.StartTimeUnixNano))
			}
		}
	}
	c.last = time.Now()
	c.mu.Unlock()
	// An empty ExportTraceServiceResponse is zero bytes of protobuf.
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.WriteHeader(http.StatusOK)
}

func (c *stageCollector) add(traceID []byte, name string, start time.Time, d time.Duration) {
	cs := c.traces[string(traceID)]
	if cs == nil {
		cs = &callSpans{}
		c.traces[string(traceID)] = cs
	}
	switch {
	case strings.HasPrefix(name, "tools/call "):
		cs.call, cs.isCall, cs.start = d, true, start
	case name == telemetry.SpanAuthenticate:
		cs.auth += d
	case name == telemetry.SpanAdmit:
		cs.admit += d
	case name == telemetry.SpanPolicy:
		cs.policy += d
	case name == telemetry.SpanUpstream:
		cs.up += d
	}
}

// window is a gateway phase: the calls whose request began in it count
// for its concurrency level.
type window struct {
	clients    int
	start, end time.Time
}

// settle waits until no export has arrived for quiet, or for at most
// limit: the gateway exports spans in batches, some after a phase ends.
func (c *stageCollector) settle(quiet, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		idle := time.Since(c.last)
		c.mu.Unlock()
		if idle >= quiet {
			return
		}
		time.Sleep(quiet / 4)
	}
}

// stages returns the stages of each concurrency level, from the calls
// that began in its windows and whose request span and admission arrived.
func (c *stageCollector) stages(levels []int, windows []window) []Stages {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Stages
	for _, n := range levels {
		var call, auth, admit, policy, store, up, rest []time.Duration
		for _, cs := range c.traces {
			if !cs.isCall || cs.admit == 0 || !inWindows(cs.start, n, windows) {
				continue
			}
			call = append(call, cs.call)
			auth = append(auth, cs.auth)
			admit = append(admit, cs.admit)
			policy = append(policy, cs.policy)
			store = append(store, max(0, cs.admit-cs.policy))
			up = append(up, cs.up)
			rest = append(rest, max(0, cs.call-cs.auth-cs.admit-cs.up))
		}
		out = append(out, Stages{Clients: n, Calls: len(call), Call: med(call), Auth: med(auth), Admit: med(admit),
			Policy: med(policy), Store: med(store), Up: med(up), Rest: med(rest)})
	}
	return out
}

func inWindows(t time.Time, clients int, windows []window) bool {
	for _, w := range windows {
		if w.clients == clients && !t.Before(w.start) && t.Before(w.end) {
			return true
		}
	}
	return false
}

func med(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[len(d)/2]
}

// reportStages prints the stage breakdown of each concurrency level.
func reportStages(w io.Writer, stages []Stages) {
	if len(stages) == 0 {
		return
	}
	fmt.Fprintf(w, "stages of one call through the gateway (median wall time per call, from its spans):\n")
	fmt.Fprintf(w, "%-8s %8s %10s %10s %10s %10s %10s %10s %10s\n", "clients", "calls", "whole", "auth", "admit", "store+det", "policy", "upstream", "rest")
	for _, s := range stages {
		fmt.Fprintf(w, "%-8d %8d %10s %10s %10s %10s %10s %10s %10s\n", s.Clients, s.Calls, ms(s.Call), ms(s.Auth),
			ms(s.Admit), ms(s.Store), ms(s.Policy), ms(s.Up), ms(s.Rest))
	}
	fmt.Fprintf(w, "admit = store+det (session store, detectors) + policy; upstream includes the upstream's own time;\n"+
		"rest = HTTP and JSON-RPC edge, result annotation, telemetry. Each column is its own median.\n")
}
