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
