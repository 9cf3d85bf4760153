package telemetry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// BatcherOptions tunes a Batcher. A zero field takes the value of the
// OTEL_BSP_* variable the SDK's batch span processor reads, or its default.
type BatcherOptions struct {
	// MaxQueueSize bounds the spans held for export; spans ended while it
	// is full are dropped and counted. OTEL_BSP_MAX_QUEUE_SIZE, default 2048.
	MaxQueueSize int
	// MaxBatchSize is the most spans sent in one export, and the count
	// that starts an export before Delay is up.
	// OTEL_BSP_MAX_EXPORT_BATCH_SIZE, default 512.
	MaxBatchSize int
	// Delay is the time from one export to the next when no batch fills
	// up. OTEL_BSP_SCHEDULE_DELAY (ms), default 5s.
	Delay time.Duration
	// ExportTimeout bounds one export. OTEL_BSP_EXPORT_TIMEOUT (ms),
	// default 30s.
	ExportTimeout time.Duration
}

// Batcher is a span processor that exports ended spans in batches, as the
// SDK's batch span processor does, without waking a goroutine per span:
// that one hands every span to its export goroutine over a channel, and
// each of a call's five spans then costs a goroutine wake-up. Here an
// ended span is appended to a slice under a mutex; the export goroutine
// runs only when a batch is full or Delay is up.
type Batcher struct {
	exp  sdktrace.SpanExporter
	opts BatcherOptions

	mu      sync.Mutex
	queue   []sdktrace.ReadOnlySpan
	stopped bool

	batch []sdktrace.ReadOnlySpan // being exported; only the holder of sem uses it

	dropped atomic.Uint64
	// The dropped count last reported, and when; only the holder of sem
	// uses them.
	reported   uint64
	reportedAt time.Time

	// sem is held by whoever exports: the exporter is never called
	// concurrently, and ForceFlush waits for an export under way.
	sem      chan struct{}
	full     chan struct{} // 1 slot: a batch is ready
	stop     chan struct{}
	done     chan struct{} // closed when the export goroutine has returned
	stopOnce sync.Once
	stopErr  error
}

var _ sdktrace.SpanProcessor = (*Batcher)(nil)

// NewBatcher starts a Batcher exporting to exp. Shutdown stops it.
func NewBatcher(exp sdktrace.SpanExporter, opts BatcherOptions) *Batcher {
	if opts.MaxQueueSize <= 0 {
		opts.MaxQueueSize = envInt("OTEL_BSP_MAX_QUEUE_SIZE", sdktrace.DefaultMaxQueueSize)
	}
	if opts.MaxBatchSize <= 0 {
		opts.MaxBatchSize = envInt("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", sdktrace.DefaultMaxExportBatchSize)
	}
	if opts.MaxBatchSize > opts.MaxQueueSize {
		opts.MaxBatchSize = opts.MaxQueueSize
	}
	if opts.Delay <= 0 {
		opts.Delay = time.Duration(envInt("OTEL_BSP_SCHEDULE_DELAY", sdktrace.DefaultScheduleDelay)) * time.Millisecond
	}
	if opts.ExportTimeout <= 0 {
		opts.ExportTimeout = time.Duration(envInt("OTEL_BSP_EXPORT_TIMEOUT", sdktrace.DefaultExportTimeout)) * time.Millisecond
	}
	b := &Batcher{
		exp:   exp,
		opts:  opts,
		queue: make([]sdktrace.ReadOnlySpan, 0, opts.MaxBatchSize),
		batch: make([]sdktrace.ReadOnlySpan, 0, opts.MaxBatchSize),
		sem:   make(chan struct{}, 1),
		full:  make(chan struct{}, 1),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	go b.run()
	return b
}

// envInt reads a positive integer variable, as the SDK does for OTEL_BSP_*.
func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// OnStart does nothing.
func (*Batcher) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

// OnEnd queues a sampled span, or drops and counts it when the queue is
// full. It wakes the export goroutine only when a batch is full.
func (b *Batcher) OnEnd(s sdktrace.ReadOnlySpan) {
	if !s.SpanContext().IsSampled() {
		return
	}
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		return
	}
	if len(b.queue) >= b.opts.MaxQueueSize {
		b.mu.Unlock()
		b.dropped.Add(1)
		return
	}
	b.queue = append(b.queue, s)
	ready := len(b.queue) == b.opts.MaxBatchSize
	b.mu.Unlock()
	if ready {
		select {
		case b.full <- struct{}{}:
		default: // a wake-up is pending already
		}
	}
}

// Dropped is the number of spans dropped because the queue was full. New
// drops are also told to the OpenTelemetry error handler, at most once per
// Delay.
func (b *Batcher) Dropped() uint64 { return b.dropped.Load() }

// run exports when a batch is full or Delay has passed, until Shutdown.
func (b *Batcher) run() {
	defer close(b.done)
	timer := time.NewTimer(b.opts.Delay)
	defer timer.Stop()
	for {
		fullOnly := false
		select {
		case <-b.stop:
			return
		case <-b.full:
			fullOnly = true
		case <-timer.C:
		}
		b.sem <- struct{}{}
		err := b.export(context.Background(), fullOnly)
		<-b.sem
		if err != nil {
			otel.Handle(err)
		}
		timer.Reset(b.opts.Delay)
	}
}

// take moves the oldest queued spans, up to MaxBatchSize, to b.batch
// and reports whether there were any. With fullOnly it takes only a full
// batch: a rest waits for the next batch, or Delay, as with the SDK's
// batcher, rather than go in an export of its own. The caller holds sem.
func (b *Batcher) take(fullOnly bool) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(b.queue)
	if n == 0 || fullOnly && n < b.opts.MaxBatchSize {
		return false
	}
	if n <= b.opts.MaxBatchSize {
		// The queue and the exported batch trade places, so that neither
		// is reallocated once both have grown.
		b.batch, b.queue = b.queue, b.batch[:0]
		return true
	}
	b.batch = append(b.batch[:0], b.queue[:b.opts.MaxBatchSize]...)
	rest := copy(b.queue, b.queue[b.opts.MaxBatchSize:])
	clear(b.queue[rest:])
	b.queue = b.queue[:rest]
	return true
}

var errExportTimeout = errors.New("span export timeout")

// export sends the queued spans, one batch at a time, each within the
// export timeout: every span, or with fullOnly the full batches. The
// caller holds sem. It stops at ctx's end.
func (b *Batcher) export(ctx context.Context, fullOnly bool) error {
	if d := b.dropped.Load(); d != b.reported && time.Since(b.reportedAt) >= b.opts.Delay {
		// Told through the OpenTelemetry error handler, where the exporter's
		// own failures go, at most once per Delay; not an error of this
		// export or flush.
		otel.Handle(fmt.Errorf("telemetry: %d spans dropped: the span export queue (%d) was full", d-b.reported, b.opts.MaxQueueSize))
		b.reported, b.reportedAt = d, time.Now()
	}
	var errs []error
	for {
		if err := ctx.Err(); err != nil {
			return errors.Join(append(errs, err)...)
		}
		if !b.take(fullOnly) {
			return errors.Join(errs...)
		}
		ectx, cancel := context.WithTimeoutCause(ctx, b.opts.ExportTimeout, errExportTimeout)
		// As with the SDK's batcher, a failed batch is not retried: the
		// exporter has its own retry policy. Exporters do not keep the
		// slice (the SDK's batcher reuses its own too).
		if err := b.exp.ExportSpans(ectx, b.batch); err != nil {
			errs = append(errs, err)
		}
		cancel()
		clear(b.batch)
		b.batch = b.batch[:0]
	}
}

// exportNow exports everything queued, waiting for an export under way,
// and returns at ctx's end even if the exporter has not.
func (b *Batcher) exportNow(ctx context.Context) error {
	select {
	case b.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	res := make(chan error, 1)
	go func() {
		defer func() { <-b.sem }()
		res <- b.export(ctx, false)
	}()
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ForceFlush exports every span ended before it was called.
func (b *Batcher) ForceFlush(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	stopped := b.stopped
	b.mu.Unlock()
	if stopped {
		return nil
	}
	return b.exportNow(ctx)
}

// Shutdown stops the export goroutine, exports what is queued and shuts
// the exporter down; spans ended after it are dropped. It returns at ctx's
// end, as the SDK's batcher does, leaving the rest to finish behind it
// (each export within ExportTimeout). Only the first call does anything.
func (b *Batcher) Shutdown(ctx context.Context) error {
	b.stopOnce.Do(func() {
		b.mu.Lock()
		b.stopped = true
		b.mu.Unlock()
		close(b.stop)
		res := make(chan error, 1)
		go func() {
			<-b.done
			b.sem <- struct{}{}
			// Not ctx: what is queued goes even when Shutdown has returned.
			if err := b.export(context.Background(), false); err != nil {
				otel.Handle(err)
			}
			<-b.sem
			res <- b.exp.Shutdown(ctx)
		}()
		select {
		case b.stopErr = <-res:
		case <-ctx.Done():
			b.stopErr = ctx.Err()
		}
	})
	return b.stopErr
}
