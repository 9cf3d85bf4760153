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

// flateWriters reuses compressors: a new flate.Writer allocates about 1 MiB of state, which
// was most of the cost of sealing a block. A few are kept in a channel rather than a
// sync.Pool, which every garbage collection empties: at a busy replica's allocation rate
// nearly every seal found the pool empty.
var flateWriters = make(chan *flate.Writer, 4)

func getFlateWriter() *flate.Writer {
	select {
	case w := <-flateWriters:
		return w
	default:
		w, _ := flate.NewWriter(nil, flate.BestSpeed) // the level is valid: no error
		return w
	}
}

func putFlateWriter(w *flate.Writer) {
	select {
	case flateWriters <- w:
	default: // enough kept
	}
}

// compressEntries joins entries with newlines (compact JSON holds none) and deflates them.
func compressEntries(entries []string) (string, error) {
	var b bytes.Buffer
	w := getFlateWriter()
	defer putFlateWriter(w)
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
