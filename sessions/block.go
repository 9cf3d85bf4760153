package sessions

import (
	"bytes"
	"compress/flate"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// seal compresses the oldest HistoryBlock entries of a session's history tail into one block.
// It runs after the commit that filled the tail; losing a race to another replica, or failing,
// leaves the tail as it was (correct, only larger), so errors are logged, not returned.
func (r *Redis) seal(ctx context.Context, id string) {
	var counts *redis.SliceCmd
	var tail *redis.StringSliceCmd
	var tl *redis.IntCmd
	_, err := r.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		counts = p.HMGet(ctx, r.metaKey(id), "n", "d")
		tail = p.LRange(ctx, r.histKey(id), 0, int64(r.block)-1)
		tl = p.LLen(ctx, r.histKey(id))
		return nil
	})
	if err != nil {
		r.opts.Logger.Warn("history not compressed", "session", id, "err", err)
		return
	}
	var n, d int64
	if c := counts.Val(); len(c) == 2 {
		_, _ = fmt.Sscan(fmt.Sprint(c[0]), &n)
		_, _ = fmt.Sscan(fmt.Sprint(c[1]), &d)
	}
	entries := tail.Val()
	if len(entries) < r.block {
		return
	}
	block, err := compressEntries(entries)
	if err != nil {
		r.opts.Logger.Warn("history not compressed", "session", id, "err", err)
		return
	}
	first := n + d - tl.Val() + 1
	if _, err := r.run(ctx, sealScript, id, first, r.block, block, r.opts.Grace.Milliseconds()); err != nil {
		r.opts.Logger.Warn("history not compressed", "session", id, "err", err)
	}
}

// flateWriters reuses compressors: a new flate.Writer allocates about 1 MiB of state, which
// was most of the cost of sealing a block.
var flateWriters = sync.Pool{New: func() any {
	w, _ := flate.NewWriter(nil, flate.BestSpeed) // the level is valid: no error
	return w
}}

// compressEntries joins entries with newlines (compact JSON holds none) and deflates them.
func compressEntries(entries []string) (string, error) {
	var b bytes.Buffer
	w := flateWriters.Get().(*flate.Writer)
	defer flateWriters.Put(w)
	w.Reset(&b)
	for i, e := range entries {
		if i > 0 {
			if _, err := io.WriteString(w, "\n"); err != nil {
				return "", err
			}
		}
		if _, err := io.WriteString(w, e); err != nil {
			return "", err
		}
	}
	if err := w.Close(); err != nil {
		return "", err
	}
	return b.String(), nil
}

// blockCache keeps decompressed history blocks. Blocks never change once sealed, so a block's
// bytes are its key; every snapshot of a busy session would otherwise inflate the same blocks.
type blockCache struct {
	mu  sync.Mutex
	max int
	m   map[string][]string
}

func newBlockCache(max int) *blockCache {
	return &blockCache{max: max, m: make(map[string][]string)}
}

// entries returns the entries of a compressed block. The slice is shared: do not modify it.
func (c *blockCache) entries(block string) ([]string, error) {
	c.mu.Lock()
	e, ok := c.m[block]
	c.mu.Unlock()
	if ok {
		return e, nil
	}
	raw, err := io.ReadAll(flate.NewReader(strings.NewReader(block)))
	if err != nil {
		return nil, fmt.Errorf("inflate: %w", err)
	}
	e = strings.Split(string(raw), "\n")
	c.mu.Lock()
	if len(c.m) >= c.max {
		clear(c.m) // crude, but bounded; a busy replica refills it within one snapshot per session
	}
	c.m[block] = e
	c.mu.Unlock()
	return e, nil
}
