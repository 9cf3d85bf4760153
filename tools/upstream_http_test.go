package tools_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/mark3labs/mcp-go/server"
	"go.opentelemetry.io/otel/trace"

	"github.com/toolgate/toolgate/tools"
	"github.com/toolgate/toolgate/tools/internal/testupstream"
)

// countingListener counts the TCP connections an upstream accepts.
type countingListener struct {
	net.Listener
	accepted atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

// TestHTTPUpstreamReusesConnections makes rounds of concurrent calls, then
// sequential ones, and checks that the upstream saw about one connection
// per concurrent call in all, not one per call: a pool that keeps too few
// idle connections closes most of them after each round and dials again.
func TestHTTPUpstreamReusesConnections(t *testing.T) {
	const (
		concurrent = 16
		rounds     = 4
		sequential = 20
	)
	tests := []struct {
		name      string
		transport string
		path      string
	}{
		{name: "streamable-http", transport: tools.TransportStreamableHTTP, path: "/mcp"},
		{name: "sse", transport: tools.TransportSSE, path: "/sse"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := testupstream.New("up")
			ts := httptest.NewUnstartedServer(nil)
			ln := &countingListener{Listener: ts.Listener}
			ts.Listener = ln
			base := "http://" + ln.Addr().String()
			if tt.transport == tools.TransportSSE {
				ts.Config.Handler = server.NewSSEServer(u.Server, server.WithBaseURL(base))
			} else {
				ts.Config.Handler = server.NewStreamableHTTPServer(u.Server)
			}
			ts.Start()
			t.Cleanup(ts.Close)
			m := mustStart(t, tools.Config{Servers: []tools.ServerConfig{
				{Name: "up", Transport: tt.transport, URL: base + tt.path},
			}}, fastOptions(nil))

			call := func() {
				res, err := m.Call(context.Background(), "up__echo_raw", json.RawMessage(`{"text":"hi"}`), tools.CallOptions{})
				if err != nil {
					t.Errorf("Call(up__echo_raw): %v", err)
					return
				}
				if got := text(t, res); got != `{"text":"hi"}` {
					t.Errorf("Call(up__echo_raw) = %s; want the arguments back", got)
				}
			}
			before := ln.accepted.Load()
			for range rounds {
				var wg sync.WaitGroup
				for range concurrent {
					wg.Go(call)
				}
				wg.Wait()
			}
			for range sequential {
				call()
			}
			// Each concurrent call may need a connection of its own, and a
			// dial started while a connection was being returned may add a
			// few; dialling again every round would add (rounds-1) times
			// about as many.
			if got, limit := ln.accepted.Load()-before, int64(concurrent+concurrent/2); got > limit {
				t.Errorf("%d calls (%d rounds of %d concurrent, then %d sequential) opened %d connections; want at most %d",
					rounds*concurrent+sequential, rounds, concurrent, sequential, got, limit)
			}
		})
	}
}

// BenchmarkCallHTTP is one tools/call through the Manager to a Streamable
// HTTP upstream on loopback, from 16 goroutines at once; dials/op counts
// the TCP connections the upstream accepted.
func BenchmarkCallHTTP(b *testing.B) {
	benchmarkCallHTTP(b, context.Background(), map[string]any{"session": "s-1", "call": 7})
}

// BenchmarkCallHTTPTraced is BenchmarkCallHTTP with what the gateway sends
// on every call: its _meta keys and a W3C trace context, which goes in a
// header too.
func BenchmarkCallHTTPTraced(b *testing.B) {
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5, 6}, TraceFlags: trace.FlagsSampled})
	meta := map[string]any{"io.toolgate/session": "2f0c9a1e-5b7d-4c3e-9f4a-8d1b6e2c7a90", "io.toolgate/call": int64(7),
		"traceparent": "00-01020300000000000000000000000000-0405060000000000-01"}
	benchmarkCallHTTP(b, trace.ContextWithSpanContext(context.Background(), sc), meta)
}

func benchmarkCallHTTP(b *testing.B, ctx context.Context, meta map[string]any) {
	u := testupstream.New("up")
	ts := httptest.NewUnstartedServer(server.NewStreamableHTTPServer(u.Server))
	ln := &countingListener{Listener: ts.Listener}
	ts.Listener = ln
	ts.Start()
	defer ts.Close()
	m, err := tools.New(tools.Config{Servers: []tools.ServerConfig{
		{Name: "up", Transport: tools.TransportStreamableHTTP, URL: ts.URL + "/mcp"},
	}}, fastOptions(nil))
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	if err := m.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	args := json.RawMessage(`{"text":"hello"}`)
	b.SetParallelism(8) // 16 goroutines on 2 CPUs
	b.ReportAllocs()
	dialled := ln.accepted.Load()
	defer func() { b.ReportMetric(float64(ln.accepted.Load()-dialled)/float64(b.N), "dials/op") }()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := m.Call(ctx, "up__echo_raw", args, tools.CallOptions{Meta: meta}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
