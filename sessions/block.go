package sessions

import (
	"bytes"
	"compress/flate"
	"fmt"
	"io"
	"strings"
	"sync"
)

// sealJobs keeps, per session, the block this replica's next commit seals: the first
// HistoryBlock entries of the tail, compressed, as the answer of its last commit held them.
// Sealing thus costs no request of its own. A lost job only leaves the tail longer until a
// later commit's answer holds the entries again.
type sealJobs struct {
	mu sync.Mutex
	m  map[string]sealJob
}

// sealJob is a compressed block of tail entries, the first of them call seq first.
type sealJob struct {
	first int64
	block string
}

// maxSealJobs bounds sealJobs; jobs of sessions that ended are forgotten only this way.
const maxSealJobs = 4096

func (j *sealJobs) get(id string) (sealJob, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	job, ok := j.m[id]
	return job, ok
}

// set stores the job for session id, or forgets the session's job when job.block is "".
func (j *sealJobs) set(id string, job sealJob) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if job.block == "" {
		delete(j.m, id)
		return
	}
	if j.m == nil || len(j.m) >= maxSealJobs {
		j.m = make(map[string]sealJob) // crude, but bounded; commits make new jobs
	}
	j.m[id] = job
}

// sealWriter is the one compressor every seal uses, in turn. A flate.Writer holds about
// 1.2 MiB of state whatever its level, which a new one allocates and zeroes (most of the cost
// of sealing a block when each seal made its own) and which stays resident while kept. A seal
// compresses one block of a few KiB in 25-35 µs, once in HistoryBlock commits, so even at
// thousands of calls a second the lock is nearly always free: one writer is kept, not one per
// seal that ever ran at the same moment as another.
var sealWriter struct {
	mu sync.Mutex
	w  *flate.Writer
}

// compressEntries joins entries with newlines (compact JSON holds none) and deflates them.
func compressEntries(entries []string) (string, error) {
	var b bytes.Buffer
	sealWriter.mu.Lock()
	defer sealWriter.mu.Unlock()
	if sealWriter.w == nil {
		sealWriter.w, _ = flate.NewWriter(nil, flate.BestSpeed) // the level is valid: no error
	}
	w := sealWriter.w
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
