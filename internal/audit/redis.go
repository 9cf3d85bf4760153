package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// streamField is the field of a stream entry that holds the event's JSON.
const streamField = "event"

// RedisStream is a Sink that appends to a Redis Stream, trimmed to about
// MaxLen entries (XADD MAXLEN ~), so that it stays bounded.
type RedisStream struct {
	client redis.UniversalClient
	key    string
	maxLen int64
	// head is the XADD arguments before the event's JSON, boxed once:
	// boxing them for every event allocated.
	head []any
}

var _ Sink = (*RedisStream)(nil)

// NewRedisStream writes to the stream key of client, keeping about maxLen
// entries. It does not close client.
func NewRedisStream(client redis.UniversalClient, key string, maxLen int64) *RedisStream {
	head := []any{"xadd", key}
	if maxLen > 0 {
		head = append(head, "maxlen", "~", maxLen)
	}
	head = append(head, "*", streamField)
	return &RedisStream{client: client, key: key, maxLen: maxLen, head: head}
}

// Write appends the events in one round trip.
func (s *RedisStream) Write(ctx context.Context, events []Event) error {
	// One buffer holds every event's JSON, and the commands refer to their
	// part of it until Exec has sent them.
	buf := make([]byte, 0, 320*len(events))
	ends := make([]int, len(events))
	for i := range events {
		var err error
		if buf, err = appendEvent(buf, &events[i]); err != nil {
			return err
		}
		ends[i] = len(buf)
	}
	// And one slice the arguments of every command.
	n := len(s.head) + 1
	args := make([]any, n*len(events))
	pipe := s.client.Pipeline()
	start := 0
	for i, end := range ends {
		cmd := args[i*n : (i+1)*n : (i+1)*n]
		copy(cmd, s.head)
		cmd[n-1] = buf[start:end:end]
		pipe.Do(ctx, cmd...)
		start = end
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("append to audit stream %s: %w", s.key, err)
	}
	return nil
}

// Close does nothing: the client belongs to the caller.
func (s *RedisStream) Close() error { return nil }

// Entry is one event read back with its position in the stream ("ms-seq"
// for Redis, the line number for a file).
type Entry struct {
	ID    string `json:"id"`
	Event Event  `json:"event"`
}

// TailRedis reads the stream key from after the entry id from ("0" for
// the beginning, "$" for only new entries) and calls fn for each entry. With
// follow it blocks for new entries until ctx ends; otherwise it returns
// once the stream is read to its end.
func TailRedis(ctx context.Context, client redis.UniversalClient, key, from string, follow bool, fn func(Entry) error) error {
	if from == "" {
		from = "0"
	}
	if from == "$" {
		// Resolve "$" once, so that a reconnect does not skip entries.
		last, err := client.XRevRangeN(ctx, key, "+", "-", 1).Result()
		if err != nil {
			return fmt.Errorf("read audit stream %s: %w", key, err)
		}
		from = "0"
		if len(last) == 1 {
			from = last[0].ID
		}
	}
	for {
		block := time.Duration(-1) // no BLOCK argument: return at once
		if follow {
			block = 5 * time.Second
		}
		res, err := client.XRead(ctx, &redis.XReadArgs{Streams: []string{key, from}, Count: 500, Block: block}).Result()
		switch {
		case errors.Is(err, redis.Nil):
			if !follow {
				return nil
			}
			if ctx.Err() != nil {
				return nil
			}
			continue
		case err != nil:
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read audit stream %s: %w", key, err)
		}
		n := 0
		for _, st := range res {
			for _, m := range st.Messages {
				from = m.ID
				n++
				var e Event
				raw, _ := m.Values[streamField].(string)
				if err := json.Unmarshal([]byte(raw), &e); err != nil {
					return fmt.Errorf("audit stream %s entry %s: %w", key, m.ID, err)
				}
				if err := fn(Entry{ID: m.ID, Event: e}); err != nil {
					return err
				}
			}
		}
		if n == 0 && !follow {
			return nil
		}
	}
}
