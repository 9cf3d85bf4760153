package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/mark3labs/mcp-go/server"
)

func TestBoundedEventStore(t *testing.T) {
	ctx := context.Background()
	s := newBoundedEventStore(4, 2)
	var ids []string
	for i := range 10 {
		id, err := s.StoreEvent(ctx, "a", "stream-1", json.RawMessage(fmt.Sprintf(`{"n":%d}`, i)))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	replay := func(session, after string) ([]string, error) {
		var got []string
		_, err := s.ReplayEventsAfter(ctx, session, after, func(_ string, m json.RawMessage) error {
			got = append(got, string(m))
			return nil
		})
		return got, err
	}
	got, err := replay("a", ids[7])
	if err != nil || fmt.Sprint(got) != `[{"n":8} {"n":9}]` {
		t.Errorf("replay after event 7 = %v, %v; want events 8 and 9", got, err)
	}
	if _, err := replay("a", ids[2]); !errors.Is(err, server.ErrUnknownEventID) {
		t.Errorf("replay after an event no longer kept = %v; want ErrUnknownEventID", err)
	}
	// A third session pushes out the oldest.
	for _, sess := range []string{"b", "c"} {
		if _, err := s.StoreEvent(ctx, sess, "x", json.RawMessage(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := replay("a", ids[8]); !errors.Is(err, server.ErrUnknownEventID) {
		t.Errorf("replay in a session beyond the session bound = %v; want ErrUnknownEventID", err)
	}
	if err := s.PurgeSession(ctx, "b"); err != nil || len(s.sessions) != 1 || len(s.order) != 1 {
		t.Errorf("after purging b: %d sessions, order %v; want only c", len(s.sessions), s.order)
	}
}

// TestBoundedEventStoreStreams checks that a session keeps only its latest
// streams: one that answers request after request over SSE would otherwise
// keep a stream for each.
func TestBoundedEventStoreStreams(t *testing.T) {
	ctx := context.Background()
	s := newBoundedEventStore(4, 10)
	s.maxStreams = 3
	first := map[string]string{} // stream -> its first event id
	for i := range 10 {
		stream := fmt.Sprintf("stream-%d", i)
		for range 2 {
			id, err := s.StoreEvent(ctx, "a", stream, json.RawMessage(`{}`))
			if err != nil {
				t.Fatal(err)
			}
			if first[stream] == "" {
				first[stream] = id
			}
		}
	}
	log := s.sessions["a"]
	if len(log.streams) != 3 || len(log.order) != 3 || len(log.where) != 6 {
		t.Errorf("after 10 streams of 2 events: %d streams, order %v, %d event ids; want 3, 3, 6", len(log.streams), log.order, len(log.where))
	}
	for i := range 10 {
		stream := fmt.Sprintf("stream-%d", i)
		got, err := s.ReplayEventsAfter(ctx, "a", first[stream], func(string, json.RawMessage) error { return nil })
		if kept := i >= 7; kept != (err == nil) || (kept && got != stream) {
			t.Errorf("ReplayEventsAfter(first event of %s) = %q, %v; want kept %v", stream, got, err, kept)
		}
	}
}
