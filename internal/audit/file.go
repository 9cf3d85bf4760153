package audit

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"
)

// File is a Sink that appends one JSON event per line to a local file and
// syncs it to disk after each write, for a single process on the memory
// store.
type File struct {
	mu sync.Mutex
	f  *os.File
}

var _ Sink = (*File)(nil)

// OpenFile opens (creating it, mode 0600) the file at path for appending.
func OpenFile(path string) (*File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open audit file: %w", err)
	}
	return &File{f: f}, nil
}

// Write appends the events and syncs the file.
func (s *File) Write(_ context.Context, events []Event) error {
	var buf []byte
	for i := range events {
		var err error
		if buf, err = appendEvent(buf, &events[i]); err != nil {
			return err
		}
		buf = append(buf, '\n')
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return ErrClosed
	}
	if _, err := s.f.Write(buf); err != nil {
		return fmt.Errorf("append to audit file: %w", err)
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("sync audit file: %w", err)
	}
	return nil
}

// Close closes the file.
func (s *File) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	return err
}

// TailFile reads the audit file at path from line from+1 (0: the start)
// and calls fn for each event, with the line number as its ID. With
// follow it then polls every interval for new lines until ctx ends.
func TailFile(ctx context.Context, path string, from int, follow bool, interval time.Duration, fn func(Entry) error) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open audit file: %w", err)
	}
	defer f.Close()
	r := bufio.NewReader(f)
	line := 0
	var partial []byte
	for {
		chunk, err := r.ReadBytes('\n')
		partial = append(partial, chunk...)
		if err == nil {
			line++
			data := partial
			partial = nil
			if line <= from {
				continue
			}
			var e Event
			if err := json.Unmarshal(data, &e); err != nil {
				return fmt.Errorf("audit file %s line %d: %w", path, line, err)
			}
			if err := fn(Entry{ID: strconv.Itoa(line), Event: e}); err != nil {
				return err
			}
			continue
		}
		if !errors.Is(err, io.EOF) {
			return fmt.Errorf("read audit file: %w", err)
		}
		if !follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
}
