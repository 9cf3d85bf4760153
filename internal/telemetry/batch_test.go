package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// otlpReceiver is an OTLP/HTTP trace endpoint that decodes what it gets.
// While hold is set, each request announces itself on arrived and waits
// for hold to be closed.
type otlpReceiver struct {
	mu      sync.Mutex
	spans   []*tracepb.Span
	batches []int
	hold    chan struct{}
	arrived chan struct{}
}

func startReceiver(t *testing.T) (*otlpReceiver, string) {
	t.Helper()
	rcv := &otlpReceiver{arrived: make(chan struct{}, 100)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var req coltrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(body, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rcv.mu.Lock()
		hold := rcv.hold
		rcv.mu.Unlock()
		if hold != nil {
			rcv.arrived <- struct{}{}
			<-hold
		}
		rcv.mu.Lock()
		n := 0
		for _, rs := range req.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				rcv.spans = append(rcv.spans, ss.Spans...)
				n += len(ss.Spans)
			}
		}
		rcv.batches = append(rcv.batches, n)
		rcv.mu.Unlock()
		out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(srv.Close)
	return rcv, srv.URL + "/v1/traces"
}

// holdExports makes the receiver keep every request until the returned
// function is called.
func (r *otlpReceiver) holdExports() (release func()) {
	hold := make(chan struct{})
	r.mu.Lock()
	r.hold = hold
	r.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			r.mu.Lock()
			r.hold = nil
			r.mu.Unlock()
			close(hold)
		})
	}
}

func (r *otlpReceiver) received() ([]*tracepb.Span, []int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*tracepb.Span(nil), r.spans...), append([]int(nil), r.batches...)
}

// waitFor waits until the receiver holds n spans, or fails after 10s.
func (r *otlpReceiver) waitFor(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		spans, _ := r.received()
		if len(spans) >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("receiver has %d spans after 10s; want %d", len(spans), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func newBatched(t *testing.T, endpoint string, opts BatcherOptions, tpOpts ...sdktrace.TracerProviderOption) (*sdktrace.TracerProvider, *Batcher) {
	t.Helper()
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(endpoint))
	if err != nil {
		t.Fatal(err)
	}
	b := NewBatcher(exp, opts)
	tp := sdktrace.NewTracerProvider(append(tpOpts, sdktrace.WithSpanProcessor(b))...)
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp, b
}

func endSpans(tp *sdktrace.TracerProvider, from, to int) {
	tr := tp.Tracer(ScopeName)
	for i := from; i < to; i++ {
		_, s := tr.Start(context.Background(), fmt.Sprintf("span-%d", i))
		s.SetAttributes(attribute.Int("i", i), attribute.String("k", "v"))
		s.End()
	}
}

// checkSpans checks that the receiver got spans 0..n-1, each once and
// with its attributes.
func checkSpans(t *testing.T, spans []*tracepb.Span, n int) {
	t.Helper()
	seen := map[string]int{}
	for _, s := range spans {
		seen[s.Name]++
		var i int64 = -1
		k := ""
		for _, kv := range s.Attributes {
			switch kv.Key {
			case "i":
				i = kv.Value.GetIntValue()
			case "k":
				k = kv.Value.GetStringValue()
			}
		}
		if want := fmt.Sprintf("span-%d", i); s.Name != want || k != "v" {
			t.Errorf("span %q has i=%d k=%q; want %s, k=v", s.Name, i, k, want)
		}
	}
	for i := range n {
		if name := fmt.Sprintf("span-%d", i); seen[name] != 1 {
			t.Errorf("span %s received %d times; want once", name, seen[name])
		}
	}
	if len(spans) != n {
		t.Errorf("received %d spans; want %d", len(spans), n)
	}
}

func TestBatcherFlushAndShutdownExportAll(t *testing.T) {
	rcv, endpoint := startReceiver(t)
	// No timer export during the test: only full batches, ForceFlush and
	// Shutdown send spans.
	tp, _ := newBatched(t, endpoint, BatcherOptions{MaxBatchSize: 8, Delay: time.Hour})
	endSpans(tp, 0, 100)
	if err := tp.ForceFlush(context.Background()); err != nil {
		t.Fatalf("ForceFlush: %v", err)
	}
	spans, batches := rcv.received()
	checkSpans(t, spans, 100)
	for _, n := range batches {
		if n > 8 {
			t.Errorf("an export sent %d spans; want at most MaxBatchSize 8 (batches %v)", n, batches)
		}
	}
	endSpans(tp, 100, 105)
	if err := tp.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	spans, _ = rcv.received()
	checkSpans(t, spans, 105)
	endSpans(tp, 105, 106) // after Shutdown: dropped
	spans, _ = rcv.received()
	if len(spans) != 105 {
		t.Errorf("received %d spans after Shutdown; want 105", len(spans))
	}
}

func TestBatcherExportsFullBatch(t *testing.T) {
	rcv, endpoint := startReceiver(t)
	tp, _ := newBatched(t, endpoint, BatcherOptions{MaxBatchSize: 4, Delay: time.Hour})
	endSpans(tp, 0, 4)
	rcv.waitFor(t, 4) // without ForceFlush: a full batch goes by itself
	spans, _ := rcv.received()
	checkSpans(t, spans, 4)
}

func TestBatcherExportsAfterDelay(t *testing.T) {
	rcv, endpoint := startReceiver(t)
	tp, _ := newBatched(t, endpoint, BatcherOptions{MaxBatchSize: 100, Delay: 5 * time.Millisecond})
	endSpans(tp, 0, 3)
	rcv.waitFor(t, 3) // less than a batch: the timer sends it
	spans, _ := rcv.received()
	checkSpans(t, spans, 3)
}

func TestBatcherSkipsUnsampled(t *testing.T) {
	rcv, endpoint := startReceiver(t)
	tp, _ := newBatched(t, endpoint, BatcherOptions{}, sdktrace.WithSampler(sdktrace.NeverSample()))
	endSpans(tp, 0, 3)
	if err := tp.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if spans, _ := rcv.received(); len(spans) != 0 {
		t.Errorf("received %d unsampled spans; want 0", len(spans))
	}
}

// handledErrors collects what reaches the OpenTelemetry error handler
// until the test ends.
type handledErrors struct {
	mu   sync.Mutex
	errs []error
}

func (h *handledErrors) Handle(err error) {
	h.mu.Lock()
	h.errs = append(h.errs, err)
	h.mu.Unlock()
}

func (h *handledErrors) text() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return fmt.Sprint(h.errs)
}

func TestBatcherDropsWhenFull(t *testing.T) {
	handled := &handledErrors{}
	old := otel.GetErrorHandler()
	otel.SetErrorHandler(handled)
	t.Cleanup(func() { otel.SetErrorHandler(old) })
	rcv, endpoint := startReceiver(t)
	tp, b := newBatched(t, endpoint, BatcherOptions{MaxQueueSize: 4, MaxBatchSize: 4, Delay: time.Hour})
	release := rcv.holdExports()
	defer release()
	endSpans(tp, 0, 4) // a full batch: its export is held at the receiver
	<-rcv.arrived
	endSpans(tp, 4, 8)  // fills the queue again
	endSpans(tp, 8, 11) // no room
	if got := b.Dropped(); got != 3 {
		t.Errorf("Dropped() = %d; want 3", got)
	}
	release()
	if err := tp.ForceFlush(context.Background()); err != nil {
		t.Fatalf("ForceFlush: %v", err)
	}
	spans, _ := rcv.received()
	checkSpans(t, spans, 8)
	// The drops are told once, through the error handler.
	if got := handled.text(); strings.Count(got, "spans dropped") != 1 ||
		!strings.Contains(got, "3 spans dropped: the span export queue (4) was full") {
		t.Errorf("error handler got %s; want the 3 dropped spans told once", got)
	}
}

func TestBatcherHonoursContexts(t *testing.T) {
	rcv, endpoint := startReceiver(t)
	tp, b := newBatched(t, endpoint, BatcherOptions{MaxBatchSize: 4, Delay: time.Hour})
	release := rcv.holdExports()
	defer release()
	endSpans(tp, 0, 4)
	<-rcv.arrived // the export goroutine is stuck in an export
	endSpans(tp, 4, 6)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := b.ForceFlush(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("ForceFlush(during a stuck export) = %v; want %v", err, context.DeadlineExceeded)
	}
	done, stop := context.WithCancel(context.Background())
	stop()
	if err := b.ForceFlush(done); !errors.Is(err, context.Canceled) {
		t.Errorf("ForceFlush(canceled) = %v; want %v", err, context.Canceled)
	}
	if err := b.Shutdown(done); !errors.Is(err, context.Canceled) {
		t.Errorf("Shutdown(canceled) = %v; want %v", err, context.Canceled)
	}
	if err := b.Shutdown(context.Background()); !errors.Is(err, context.Canceled) {
		t.Errorf("second Shutdown = %v; want the first's error", err)
	}
}

func TestSetupExportsSpans(t *testing.T) {
	rcv, endpoint := startReceiver(t)
	cfg := Config{Traces: TracesConfig{Exporter: ExporterOTLPHTTP, Endpoint: endpoint}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	p, err := Setup(context.Background(), cfg, "test")
	if err != nil {
		t.Fatal(err)
	}
	_, span := p.Tracer.Tracer(ScopeName).Start(context.Background(), "span-0")
	span.SetAttributes(attribute.Int("i", 0), attribute.String("k", "v"))
	span.End()
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	spans, _ := rcv.received()
	checkSpans(t, spans, 1)
}

// discard is an exporter that counts and drops what it is given, so that
// a benchmark measures the span processor rather than the OTLP encoding.
type discard struct{ n *atomic.Int64 }

func (d discard) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	d.n.Add(int64(len(spans)))
	return nil
}

func (discard) Shutdown(context.Context) error { return nil }

// BenchmarkSpanProcessor ends a gateway call's five spans (a request span
// and four children) per op, through the SDK's batch span processor and
// through the Batcher. One goroutine makes the spans, as one call does,
// leaving the other core to the export goroutine.
//
//	go test ./internal/telemetry/ -run '^$' -bench SpanProcessor -benchtime 3000x
func BenchmarkSpanProcessor(b *testing.B) {
	for _, tt := range []struct {
		name string
		sp   func(e sdktrace.SpanExporter, queue int) sdktrace.SpanProcessor
	}{
		{"sdk", func(e sdktrace.SpanExporter, queue int) sdktrace.SpanProcessor {
			return sdktrace.NewBatchSpanProcessor(e, sdktrace.WithMaxQueueSize(queue))
		}},
		{"batcher", func(e sdktrace.SpanExporter, queue int) sdktrace.SpanProcessor {
			return NewBatcher(e, BatcherOptions{MaxQueueSize: queue})
		}},
	} {
		b.Run(tt.name, func(b *testing.B) {
			exported := &atomic.Int64{}
			// Room for every span of 3000 ops: on a busy machine (or under
			// valgrind) the export goroutine can wait for a core for
			// milliseconds, and a dropped span would be a span not paid for.
			tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(tt.sp(discard{exported}, 16384)))
			tr := tp.Tracer(ScopeName)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				ctx, root := tr.Start(context.Background(), "request")
				for _, name := range []string{SpanAuthenticate, SpanAdmit, SpanPolicy, SpanUpstream} {
					_, s := tr.Start(ctx, name)
					s.End()
				}
				root.End()
			}
			b.StopTimer()
			if err := tp.Shutdown(context.Background()); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(exported.Load())/float64(b.N), "exported/op")
		})
	}
}
