package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
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
