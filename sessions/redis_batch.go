package sessions

import (
	"context"
	"slices"
	"sync"

	"github.com/redis/go-redis/v9"
)

// script is a Lua script of the store, run by EVALSHA, and by EVAL when Redis does not hold it
// (NOSCRIPT: a new or restarted server).
type script struct {
	*redis.Script
	src  string
	hash any // the digest as an EVALSHA argument, boxed once
}

func newScript(src string) *script {
	s := redis.NewScript(src)
	return &script{Script: s, src: src, hash: s.Hash()}
}

// scriptArgs starts the EVALSHA command that runs sc on session id's three keys: the command,
// the keys and the arguments every script takes (channel, now, id), with room for n more.
func (r *Redis) scriptArgs(sc *script, id string, now int64, n int) []any {
	// One string holds the three keys (see metaKey, histKey, blockKey).
	keys := r.prefix + ":{" + id + "}:m" + r.prefix + ":{" + id + "}:h" + r.prefix + ":{" + id + "}:b"
	k := len(keys) / 3
	args := make([]any, 0, 9+n)
	return append(args, "evalsha", sc.hash, 3, keys[:k], keys[k:2*k], keys[2*k:], r.channelArg, now, id)
}

// scriptCmd makes the command of args, as begun by scriptArgs.
func scriptCmd(ctx context.Context, args []any) *redis.Cmd {
	cmd := redis.NewCmd(ctx, args...)
	cmd.SetFirstKeyPos(3) // Cluster routes by the meta key
	return cmd
}

func noScript(err error) bool {
	return err != nil && (redis.HasErrorPrefix(err, "NOSCRIPT") || err == redis.ErrNoScript)
}

// send runs cmds, each an EVALSHA of sc made by scriptCmd: one alone, several in one pipeline.
// Each command gets its own answer or error; an error of the connection fails every one. Those
// Redis answered NOSCRIPT are sent again as EVAL, which loads the script.
func (r *Redis) send(ctx context.Context, sc *script, cmds []*redis.Cmd) {
	r.process(ctx, cmds)
	var again, orig []*redis.Cmd
	for _, c := range cmds {
		if noScript(c.Err()) {
			args := slices.Clone(c.Args())
			args[0], args[1] = "eval", sc.src
			again, orig = append(again, scriptCmd(ctx, args)), append(orig, c)
		}
	}
	if len(again) == 0 {
		return
	}
	r.process(ctx, again)
	for i, c := range again {
		orig[i].SetVal(c.Val())
		orig[i].SetErr(c.Err())
	}
}

func (r *Redis) process(ctx context.Context, cmds []*redis.Cmd) {
	if len(cmds) == 1 {
		_ = r.c.Process(ctx, cmds[0])
		return
	}
	_, _ = r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, c := range cmds {
			_ = p.Process(ctx, c)
		}
		return nil
	})
}

// batcher groups the commits of different sessions that wait at the same moment into one
// pipeline: one write and one read for all of them instead of a round trip each, which is
// most of what a commit costs the client. The first caller that finds no batch in flight
// sends its command at once, so a lone commit waits for nothing; callers that arrive while a
// batch is in flight queue up, and when it returns its leader hands the queue to the first of
// them, which sends it as the next batch.
type batcher struct {
	mu    sync.Mutex
	busy  bool // a batch is in flight
	queue []*batchCall
}

// batchCall is one queued command.
type batchCall struct {
	ctx context.Context
	cmd *redis.Cmd
	// wake carries true when the call leads a batch (then batch is set), false when its batch
	// returned and cmd holds the answer.
	wake  chan bool
	batch []*batchCall
	// taken and leads are guarded by batcher.mu: the call left the queue for a batch, as the
	// batch's leader.
	taken, leads bool
}

// eval runs cmd, an EVALSHA of sc made by scriptCmd, in the next batch (see batcher), and
// returns its answer. A caller whose ctx ends while it waits returns ctx's error; its command
// is left out of a batch not yet sent, and the others of its batch are not affected.
func (r *Redis) eval(ctx context.Context, sc *script, cmd *redis.Cmd) ([]any, error) {
	b := &r.commits
	b.mu.Lock()
	if !b.busy {
		b.busy = true
		b.mu.Unlock()
		r.send(ctx, sc, []*redis.Cmd{cmd})
		r.handOff(sc)
		return cmd.Slice()
	}
	c := &batchCall{ctx: ctx, cmd: cmd, wake: make(chan bool, 1)}
	b.queue = append(b.queue, c)
	b.mu.Unlock()
	select {
	case lead := <-c.wake:
		if lead {
			r.lead(sc, c.batch)
		}
		return cmd.Slice()
	case <-ctx.Done():
	}
	b.mu.Lock()
	if !c.taken {
		b.queue = slices.DeleteFunc(b.queue, func(q *batchCall) bool { return q == c })
		b.mu.Unlock()
		return nil, ctx.Err()
	}
	leads := c.leads
	b.mu.Unlock()
	if !leads {
		// The batch's leader sends or skips the command and writes its answer; nobody reads it.
		return nil, ctx.Err()
	}
	// The others of the batch wait for this call to send it.
	<-c.wake
	r.lead(sc, c.batch)
	return nil, ctx.Err()
}

// lead sends batch, handed to its first call, then wakes the others. The batch does not end
// with the leader's context: another caller's command must not fail because the leader left.
func (r *Redis) lead(sc *script, batch []*batchCall) {
	cmds := make([]*redis.Cmd, 0, len(batch))
	for _, c := range batch {
		if err := c.ctx.Err(); err != nil {
			c.cmd.SetErr(err) // its caller gave up: do not commit behind its back
			continue
		}
		cmds = append(cmds, c.cmd)
	}
	if len(cmds) > 0 {
		r.send(context.WithoutCancel(batch[0].ctx), sc, cmds)
	}
	r.handOff(sc)
	for _, c := range batch[1:] {
		c.wake <- false
	}
}

// handOff ends the batch in flight: the commands queued meanwhile become the next batch, led
// by the first of them, or, when there are none, the next caller sends at once.
func (r *Redis) handOff(sc *script) {
	b := &r.commits
	b.mu.Lock()
	next := b.queue
	b.queue = nil
	if len(next) == 0 {
		b.busy = false
	}
	for _, c := range next {
		c.taken = true
	}
	if len(next) > 0 {
		next[0].leads = true
	}
	b.mu.Unlock()
	if len(next) > 0 {
		next[0].batch = next
		next[0].wake <- true
	}
}
