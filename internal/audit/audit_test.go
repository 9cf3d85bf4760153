package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toolgate/toolgate/sessions/sessionstest"
)

// memSink records writes, for checking what the recorder hands over.
type memSink struct {
	mu     sync.Mutex
	writes [][]Event
	fail   error
}

func (s *memSink) Write(_ context.Context, ev []Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	s.writes = append(s.writes, append([]Event(nil), ev...))
	return nil
}

func (s *memSink) Close() error { return nil }

func (s *memSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, w := range s.writes {
		n += len(w)
	}
	return n
}

func TestRecorderSyncAndAsync(t *testing.T) {
	sink := &memSink{}
	var tapped []Kind
	var mu sync.Mutex
	r := NewRecorder(sink, Options{Tap: func(e Event) { mu.Lock(); tapped = append(tapped, e.Kind); mu.Unlock() }})
	if err := r.Record(context.Background(), Event{Kind: KindRevoke, Session: "s"}, true); err != nil {
		t.Fatal(err)
	}
	if got := sink.count(); got != 1 {
		t.Fatalf("after a synchronous Record, sink holds %d events; want 1", got)
	}
	for range 100 {
		if err := r.Record(context.Background(), Event{Kind: KindDecision}, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if got := sink.count(); got != 101 {
		t.Errorf("after Close, sink holds %d events; want 101 (queued events flushed)", got)
	}
	if len(tapped) != 101 || tapped[0] != KindRevoke {
		t.Errorf("Tap saw %d events, first %v; want 101, first revoke", len(tapped), tapped[0])
	}
	// Recording after Close writes synchronously rather than panicking.
	if err := r.Record(context.Background(), Event{Kind: KindDecision}, false); err != nil {
		t.Errorf("Record after Close = %v", err)
	}
}

func TestRecorderReportsFailures(t *testing.T) {
	sink := &memSink{fail: errors.New("down")}
	var failed int
	r := NewRecorder(sink, Options{OnError: func(Event, error) { failed++ }})
	defer r.Close()
	if err := r.Record(context.Background(), Event{Kind: KindRevoke}, true); err == nil || !strings.Contains(err.Error(), "down") {
		t.Errorf("Record with a failing sink = %v; want the sink's error", err)
	}
	if failed != 1 {
		t.Errorf("OnError calls = %d; want 1", failed)
	}
}

func TestRecorderLogs(t *testing.T) {
	var buf bytes.Buffer
	r := NewRecorder(nil, Options{Logger: slog.New(slog.NewJSONHandler(&buf, nil))})
	defer r.Close()
	if err := r.Record(context.Background(), Event{Kind: KindFreeze, Session: "s1", Reason: "r"}, true); err != nil {
		t.Fatal(err)
	}
	var line struct {
		Msg   string `json:"msg"`
		Audit struct {
			Kind, Session, Reason string
		} `json:"audit"`
	}
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("log line %q: %v", buf.String(), err)
	}
	if line.Msg != "audit" || line.Audit.Kind != "freeze" || line.Audit.Session != "s1" || line.Audit.Reason != "r" {
		t.Errorf("log line = %+v; want the freeze event", line)
	}
}

func TestFileRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	f, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []Event{{Kind: KindDecision, Decision: "allow"}, {Kind: KindRevoke, Reason: "x"}}
	if err := f.Write(context.Background(), want); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Write(context.Background(), want); !errors.Is(err, ErrClosed) {
		t.Errorf("Write after Close = %v; want ErrClosed", err)
	}
	var got []Entry
	if err := TailFile(context.Background(), path, 0, false, 0, func(e Entry) error { got = append(got, e); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[1].ID != "2" || got[1].Event.Reason != "x" {
		t.Errorf("TailFile = %+v; want both events, the second with id 2", got)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"defaults", Config{}, true},
		{"tiny stream", Config{MaxLen: 5}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if (err == nil) != tt.ok {
				t.Errorf("Validate() = %v; want ok=%v", err, tt.ok)
			}
		})
	}
	c := Config{}
	if got := c.StreamKey("tg"); got != "tg:audit" {
		t.Errorf("StreamKey(tg) = %q; want tg:audit", got)
	}
}

// BenchmarkNewRecorder reports what a recorder with the default queue
// holds before any event is recorded (B/op).
func BenchmarkNewRecorder(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		r := NewRecorder(&memSink{}, Options{})
		_ = r.Close()
	}
}

// BenchmarkRecordAsync is the cost of queueing one decision event.
func BenchmarkRecordAsync(b *testing.B) {
	r := NewRecorder(&discardSink{}, Options{})
	defer r.Close()
	ctx := context.Background()
	e := Event{Kind: KindDecision, Session: "s", Agent: "a", Tool: "up__echo", Decision: "allow", Rules: []string{"r1"}}
	b.ReportAllocs()
	for b.Loop() {
		_ = r.Record(ctx, e, false)
	}
}

type discardSink struct{}

func (discardSink) Write(context.Context, []Event) error { return nil }
func (discardSink) Close() error                         { return nil }

// TestRecorderKeepsOrder records asynchronous and synchronous events in
// turn: the sink gets them all, in the order they were recorded.
func TestRecorderKeepsOrder(t *testing.T) {
	sink := &memSink{}
	r := NewRecorder(sink, Options{BatchSize: 7})
	for i := range 200 {
		if err := r.Record(context.Background(), Event{Kind: KindDecision, Seq: int64(i + 1)}, i%9 == 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	var seqs []int64
	for _, w := range sink.writes {
		if len(w) > 7 {
			t.Errorf("a write of %d events; want at most BatchSize 7", len(w))
		}
		for _, e := range w {
			seqs = append(seqs, e.Seq)
		}
	}
	if len(seqs) != 200 {
		t.Fatalf("sink holds %d events; want 200", len(seqs))
	}
	for i, s := range seqs {
		if s != int64(i+1) {
			t.Fatalf("event %d written has seq %d; want %d (all: %v)", i, s, i+1, seqs)
		}
	}
}

// TestRecorderLingers checks that queued events wait for company, and that
// a synchronous event takes them along at once.
func TestRecorderLingers(t *testing.T) {
	sink := &memSink{}
	// Only the synchronous event can end a linger this long.
	r := NewRecorder(sink, Options{Linger: time.Hour})
	defer r.Close()
	for i := range 10 {
		if err := r.Record(context.Background(), Event{Kind: KindDecision, Seq: int64(i + 1)}, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Record(context.Background(), Event{Kind: KindRevoke, Seq: 11}, true); err != nil {
		t.Fatal(err)
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.writes) != 1 || len(sink.writes[0]) != 11 || sink.writes[0][10].Kind != KindRevoke {
		t.Errorf("writes = %v; want one write of the 10 queued events and the revoke", sink.writes)
	}
}

// TestRecorderCloseEndsLinger checks that Close writes the queued events
// without waiting for the linger to pass.
func TestRecorderCloseEndsLinger(t *testing.T) {
	sink := &memSink{}
	r := NewRecorder(sink, Options{Linger: time.Hour})
	for range 3 {
		if err := r.Record(context.Background(), Event{Kind: KindDecision}, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if got := sink.count(); got != 3 {
		t.Errorf("after Close, sink holds %d events; want 3", got)
	}
}

// TestRecorderFullBatchEndsLinger checks that a full batch is written
// without waiting for the linger to pass.
func TestRecorderFullBatchEndsLinger(t *testing.T) {
	sink := &memSink{}
	r := NewRecorder(sink, Options{Linger: time.Hour, BatchSize: 4})
	defer r.Close()
	for range 4 {
		if err := r.Record(context.Background(), Event{Kind: KindDecision}, false); err != nil {
			t.Fatal(err)
		}
	}
	// The writer runs on: wait for it, bounded by the test's deadline.
	for sink.count() < 4 {
		runtime.Gosched()
	}
}

func TestAppendEventIsJSON(t *testing.T) {
	yes, no := true, false
	when := time.Date(2026, 7, 28, 12, 30, 1, 123456789, time.FixedZone("x", -5*3600-1800))
	for _, e := range []Event{
		{},
		{Time: when, Kind: KindDecision, Session: "s1", Agent: "a", Profile: "p", Tool: "up__echo", Seq: 42,
			Decision: "deny", Rules: []string{"r1", "r2"}, Flags: []string{"exfil"}, Risk: 0.75, Forwarded: true,
			Reason: "no", Actor: "policy", TraceID: "4bf92f3577b34da6a3ce929d0e0e4736"},
		{Time: when.UTC(), Kind: KindApproval, Approved: &yes, Actor: "ann"},
		{Kind: KindApproval, Approved: &no, Rules: []string{}, Flags: nil, Removed: []string{"label:x", "up__*"}},
		{Kind: KindRevoke, Count: -3, Seq: -1, Risk: -0.0},
		{Kind: KindPolicyReload, PolicyVersion: "v2", Error: "rules[3].when: <undeclared> & \"quoted\" \\ \b\f\n\r\t\x00\x1f\x7f"},
		{Kind: "ünïcode", Reason: "\u2028\u2029 \xff\xfe invalid \xe2\x82 cut é 日本 😀"},
		{Kind: KindDecision, Risk: 1e-7},
		{Kind: KindDecision, Risk: 1e21},
		{Kind: KindDecision, Risk: 123456789.125},
		{Kind: KindDecision, Risk: 5e-324},
	} {
		want, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		got, err := appendEvent(nil, &e)
		if err != nil || string(got) != string(want) {
			t.Errorf("appendEvent(%+v) = %s, %v; want %s", e, got, err, want)
		}
	}
}

func TestAppendEventRefusesWhatJSONRefuses(t *testing.T) {
	for _, e := range []Event{
		{Kind: KindDecision, Risk: math.NaN()},
		{Kind: KindDecision, Risk: math.Inf(1)},
		{Kind: KindDecision, Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
	} {
		if _, err := appendEvent(nil, &e); err == nil {
			t.Errorf("appendEvent(%+v) = nil error; want encoding/json's", e)
		}
	}
}

func FuzzAppendEvent(f *testing.F) {
	f.Add("s1", "deny", "r1", "<b>&\u2028", 0.5, int64(3), int64(0))
	f.Add("\xff", "", "", "\x00\"\\", -1e-9, int64(-1), int64(1e18))
	f.Fuzz(func(t *testing.T, session, decision, rule, reason string, risk float64, seq, nanos int64) {
		if math.IsNaN(risk) || math.IsInf(risk, 0) {
			return
		}
		e := Event{Time: time.Unix(0, nanos), Kind: Kind(decision), Session: session, Decision: decision,
			Rules: []string{rule, reason}, Risk: risk, Seq: seq, Reason: reason}
		want, err := json.Marshal(e)
		if err != nil {
			return
		}
		got, err := appendEvent(nil, &e)
		if err != nil || string(got) != string(want) {
			t.Errorf("appendEvent(%+v) = %s, %v; want %s", e, got, err, want)
		}
	})
}

func TestRedisStreamRoundTrip(t *testing.T) {
	rs := sessionstest.StartRedis(t)
	rdb := rs.Client()
	key := sessionstest.Prefix() + ":audit"
	yes := true
	want := []Event{
		{Time: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC), Kind: KindDecision, Session: "s", Tool: "up__echo", Seq: 1, Decision: "allow", Forwarded: true},
		{Time: time.Date(2026, 1, 2, 3, 4, 5, 7, time.UTC), Kind: KindApproval, Approved: &yes, Reason: "<&>\n"},
		{Time: time.Date(2026, 1, 2, 3, 4, 5, 8, time.UTC), Kind: KindRevoke, Rules: []string{"a", "b"}, Risk: 0.25},
	}
	s := NewRedisStream(rdb, key, 100)
	if err := s.Write(context.Background(), want[:1]); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(context.Background(), want[1:]); err != nil {
		t.Fatal(err)
	}
	var got []Event
	err := TailRedis(context.Background(), rdb, key, "0", false, func(e Entry) error { got = append(got, e.Event); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("TailRedis = %+v; want %+v", got, want)
	}
	// The stream is trimmed: XADD carries MAXLEN ~ 100.
	if err := NewRedisStream(rdb, key, 100).Write(context.Background(), make([]Event, 1000)); err != nil {
		t.Fatal(err)
	}
	if n := rdb.XLen(context.Background(), key).Val(); n >= 1000 {
		t.Errorf("XLEN = %d after 1003 events with max_len 100; want the stream trimmed", n)
	}
}

// countingSink counts the writes made to the sink it wraps.
type countingSink struct {
	Sink
	writes, events atomic.Int64
}

func (s *countingSink) Write(ctx context.Context, ev []Event) error {
	s.writes.Add(1)
	s.events.Add(int64(len(ev)))
	return s.Sink.Write(ctx, ev)
}

// BenchmarkRecordRedis is the cost of recording allowed calls' events to
// a Redis stream, from Record to the stream: Close flushes the queue within
// the timing. events/write is how many share a round trip.
//
//	go test ./internal/audit/ -run '^$' -bench RecordRedis -benchmem
func BenchmarkRecordRedis(b *testing.B) {
	for _, clients := range []int{1, 8} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			rs := sessionstest.StartRedis(b)
			sink := &countingSink{Sink: NewRedisStream(rs.Client(), sessionstest.Prefix()+":audit", 100000)}
			r := NewRecorder(sink, Options{})
			e := Event{Time: time.Now(), Kind: KindDecision, Session: "0123456789abcdef0123456789abcdef", Agent: "agent-1",
				Profile: "default", Tool: "demo__list_files", Seq: 12, Decision: "allow", Forwarded: true, Risk: 0.1,
				TraceID: "4bf92f3577b34da6a3ce929d0e0e4736"}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			var left atomic.Int64
			left.Store(int64(b.N))
			var wg sync.WaitGroup
			for range clients {
				wg.Go(func() {
					for left.Add(-1) >= 0 {
						// A call takes about half a millisecond of its client's time.
						time.Sleep(500 * time.Microsecond)
						_ = r.Record(ctx, e, false)
					}
				})
			}
			wg.Wait()
			_ = r.Close()
			b.StopTimer()
			b.ReportMetric(float64(sink.events.Load())/float64(max(1, sink.writes.Load())), "events/write")
		})
	}
}

// BenchmarkRedisStreamWrite is the cost per event of writing batches of
// one event (the recorder's writes at low load before it lingered) and of
// eight, to a Redis stream.
//
//	go test ./internal/audit/ -run '^$' -bench RedisStreamWrite -benchmem
func BenchmarkRedisStreamWrite(b *testing.B) {
	rs := sessionstest.StartRedis(b)
	for _, n := range []int{1, 8} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			s := NewRedisStream(rs.Client(), sessionstest.Prefix()+":audit", 100000)
			e := Event{Time: time.Now(), Kind: KindDecision, Session: "0123456789abcdef0123456789abcdef", Agent: "agent-1",
				Profile: "default", Tool: "demo__list_files", Seq: 12, Decision: "allow", Forwarded: true, Risk: 0.1,
				TraceID: "4bf92f3577b34da6a3ce929d0e0e4736"}
			batch := make([]Event, n)
			for i := range batch {
				batch[i] = e
			}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if err := s.Write(ctx, batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
		})
	}
}
