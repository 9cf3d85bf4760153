package bench

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	collector "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/toolgate/toolgate/internal/telemetry"
)

// TestStageCollector sends OTLP/HTTP exports of two calls, one in a
// 1-client window and one outside every window, and reads the stages.
func TestStageCollector(t *testing.T) {
	c := newStageCollector()
	srv := httptest.NewServer(c)
	defer srv.Close()
	t0 := time.Now()
	span := func(trace byte, name string, startMs, durMs int) *tracepb.Span {
		s := uint64(t0.Add(time.Duration(startMs) * time.Millisecond).UnixNano())
		return &tracepb.Span{TraceId: bytes.Repeat([]byte{trace}, 16), Name: name,
			StartTimeUnixNano: s, EndTimeUnixNano: s + uint64(durMs)*uint64(time.Millisecond)}
	}
	req := &collector.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{ScopeSpans: []*tracepb.ScopeSpans{{
		Spans: []*tracepb.Span{
			span(1, "tools/call up__echo", 0, 10),
			span(1, telemetry.SpanAuthenticate, 0, 1),
			span(1, telemetry.SpanAdmit, 1, 4),
			span(1, telemetry.SpanPolicy, 2, 1),
			span(1, telemetry.SpanUpstream, 5, 3),
			span(2, "tools/call up__echo", 5000, 50), // outside the window
			span(2, telemetry.SpanAdmit, 5000, 40),
		},
	}}}}}
	body, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.Post(srv.URL, "application/x-protobuf", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("export answered %d", res.StatusCode)
	}
	res, err = http.Post(srv.URL, "application/x-protobuf", bytes.NewReader([]byte{0xff, 0xff}))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	c.mu.Lock()
	bad := c.bad
	c.mu.Unlock()
	if res.StatusCode != http.StatusBadRequest || bad != 1 {
		t.Errorf("a malformed export answered %d, bad=%d; want 400 and 1", res.StatusCode, bad)
	}

	got := c.stages([]int{1}, []window{{clients: 1, start: t0, end: t0.Add(time.Second)}})
	ms := time.Millisecond
	want := Stages{Clients: 1, Calls: 1, Call: 10 * ms, Auth: ms, Admit: 4 * ms, Policy: ms, Store: 3 * ms, Up: 3 * ms, Rest: 2 * ms}
	if len(got) != 1 || got[0] != want {
		t.Errorf("stages = %+v; want %+v", got, want)
	}
}
