package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"

	"github.com/mark3labs/mcp-go/server"
)

// boundedEventStore keeps, for each MCP transport session, the last few
// events of its latest streams, so that a client can resume a stream it
// lost (and progress notifications racing a response are not lost,
// notes/mcp-go.md pitfall 7). mcp-go's InMemoryEventStore keeps every
// event until the transport session ends, which a long-lived agent session
// would grow without bound; so would a session here if it kept every
// stream, as each request answered over SSE is a stream of its own.
type boundedEventStore struct {
	perStream   int // events kept per stream
	maxStreams  int // streams kept per session; the oldest is dropped beyond
	maxSessions int // transport sessions kept; the oldest is dropped beyond

	mu       sync.Mutex
	seq      int64
	sessions map[string]*eventLog
	order    []string // sessions by first event, oldest first
}

type eventLog struct {
	streams map[string][]storedEvent // newest last, at most perStream each
	order   []string                 // stream ids by first event, oldest first
	where   map[string]string        // event id -> stream id
}

// streamsPerSession bounds the streams a session keeps: a client resumes
// the streams of the requests it has in flight, not those answered long ago.
const streamsPerSession = 32

type storedEvent struct {
	id  string
	msg json.RawMessage
}

var _ server.EventStore = (*boundedEventStore)(nil)

func newBoundedEventStore(perStream, maxSessions int) *boundedEventStore {
	return &boundedEventStore{perStream: perStream, maxStreams: streamsPerSession, maxSessions: maxSessions, sessions: map[string]*eventLog{}}
}

// StoreEvent implements server.EventStore.
func (s *boundedEventStore) StoreEvent(_ context.Context, sessionID, streamID string, message json.RawMessage) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	log := s.sessions[sessionID]
	if log == nil {
		log = &eventLog{streams: map[string][]storedEvent{}, where: map[string]string{}}
		s.sessions[sessionID] = log
		s.order = append(s.order, sessionID)
		for len(s.order) > s.maxSessions {
			delete(s.sessions, s.order[0])
			s.order = s.order[1:]
		}
	}
	s.seq++
	id := strconv.FormatInt(s.seq, 10)
	events, known := log.streams[streamID]
	if !known {
		log.order = append(log.order, streamID)
		for len(log.order) > s.maxStreams {
			for _, old := range log.streams[log.order[0]] {
				delete(log.where, old.id)
			}
			delete(log.streams, log.order[0])
			log.order = log.order[1:]
		}
	}
	events = append(events, storedEvent{id: id, msg: append(json.RawMessage(nil), message...)})
	if over := len(events) - s.perStream; over > 0 {
		for _, old := range events[:over] {
			delete(log.where, old.id)
		}
		events = append(events[:0:0], events[over:]...)
	}
	log.streams[streamID] = events
	log.where[id] = streamID
	return id, nil
}

// ReplayEventsAfter implements server.EventStore. An event id that is no
// longer kept is unknown: the client starts afresh, as after a purge.
func (s *boundedEventStore) ReplayEventsAfter(_ context.Context, sessionID, lastEventID string, send func(eventID string, message json.RawMessage) error) (string, error) {
	s.mu.Lock()
	log := s.sessions[sessionID]
	var stream string
	var tail []storedEvent
	if log != nil {
		stream = log.where[lastEventID]
	}
	if stream == "" {
		s.mu.Unlock()
		return "", fmt.Errorf("%w: %s", server.ErrUnknownEventID, lastEventID)
	}
	events := log.streams[stream]
	for i, ev := range events {
		if ev.id == lastEventID {
			tail = append(tail, events[i+1:]...)
			break
		}
	}
	s.mu.Unlock()
	for _, ev := range tail {
		if err := send(ev.id, ev.msg); err != nil {
			return "", err
		}
	}
	return stream, nil
}

// PurgeSession implements server.EventStore.
func (s *boundedEventStore) PurgeSession(_ context.Context, sessionID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.sessions[sessionID]; !ok {
		return nil
	}
	delete(s.sessions, sessionID)
	for i, id := range s.order {
		if id == sessionID {
			s.order = append(s.order[:i], s.order[i+1:]...)
			break
		}
	}
	return nil
}
