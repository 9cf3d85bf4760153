package sessions

// QueuedCommits is how many commits wait for the batch in flight to return (see batcher).
func (r *Redis) QueuedCommits() int {
	r.commits.mu.Lock()
	defer r.commits.mu.Unlock()
	return len(r.commits.queue)
}
