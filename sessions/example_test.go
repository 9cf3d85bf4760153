package sessions_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/toolgate/toolgate/sessions"
)

// The admit protocol: snapshot, decide (policy, not shown), commit on the snapshot's version,
// and start again from the snapshot on a conflict.
func Example() {
	ctx := context.Background()
	store := sessions.NewMemory(sessions.Options{})
	sess, token, err := store.Create(ctx, sessions.Spec{
		Agent:    "ci-bot",
		Scope:    []string{"files__read_*", "search__*"},
		Lifetime: time.Hour,
		Budget:   100,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	// Later, on a request carrying the bearer token:
	snap, err := store.LookupToken(ctx, sessions.HashToken(token))
	if err != nil {
		fmt.Println("refused:", err)
		return
	}
	name := "files__read_file"
	fmt.Println("allowed:", snap.Allowed(name), snap.Allowed("files__write_file"))
	rec := sessions.CallRecord{Server: "files", Tool: "read_file", Name: name,
		Args: json.RawMessage(`{"path": "/etc/hosts"}`), Decision: "allow"}
	for {
		_, err = store.Commit(ctx, sess.ID, snap.Version, rec, sessions.Effects{})
		if !errors.Is(err, sessions.ErrConflict) {
			break
		}
		if snap, err = store.Snapshot(ctx, sess.ID); err != nil {
			break
		}
	}
	if err != nil {
		fmt.Println("refused:", err)
		return
	}
	after, _ := store.Get(ctx, sess.ID)
	fmt.Printf("calls: %d, history: %s %s\n", after.Calls, after.History[0].Name, after.History[0].Args)

	// An operator revokes the session; the next call is refused.
	if _, err := store.Revoke(ctx, sess.ID, "key leaked"); err != nil {
		fmt.Println(err)
		return
	}
	_, err = store.LookupToken(ctx, sessions.HashToken(token))
	fmt.Println("refused:", errors.Is(err, sessions.ErrNotActive))
	// Output:
	// allowed: true false
	// calls: 1, history: files__read_file {"path":"/etc/hosts"}
	// refused: true
}

// Every replica subscribes, to cancel the in-flight calls of a session that another replica
// revoked.
func ExampleStore_Subscribe() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store := sessions.NewMemory(sessions.Options{})
	events, _ := store.Subscribe(ctx)
	sess, _, _ := store.Create(ctx, sessions.Spec{Agent: "ci-bot", Scope: []string{"*"}, Lifetime: time.Hour})
	_, _ = store.Freeze(ctx, sess.ID, "unusual volume")
	ev := <-events
	fmt.Println(ev.Kind, ev.Agent, ev.Reason)
	// Output: frozen ci-bot unusual volume
}
