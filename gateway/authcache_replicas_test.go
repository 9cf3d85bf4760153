package gateway_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/toolgate/toolgate/sessions"
)

// A token whose tools/call was just authenticated on one replica is refused there at the
// HTTP layer as soon as a revoke or freeze made on another replica has returned: the reused
// lookup is dropped before the replica acknowledges the change.
func TestAuthCacheEndsWithSession(t *testing.T) {
	reps, stores := threeReplicas(t, "", "")
	hc := &http.Client{}
	for _, tc := range []struct {
		name   string
		end    func(id string) error
		status int
	}{
		{"revoke", func(id string) error { _, err := stores[1].Revoke(context.Background(), id, "leaked"); return err }, 401},
		{"freeze", func(id string) error { _, err := stores[2].Freeze(context.Background(), id, "review"); return err }, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			token := mintToken(t, reps[0].url, "agent-1", sessionKeys["KEY1"], "")
			for i := range 3 {
				if status, body := rawCall(hc, reps[0].url, token, "demo__list_files", i); status != 200 || strings.Contains(body, `"isError":true`) {
					t.Fatalf("call %d before the %s = %d %s; want 200", i, tc.name, status, body)
				}
			}
			id := sessions.IDFromHash(sessions.HashToken(token))
			if err := tc.end(id); err != nil {
				t.Fatal(err)
			}
			if status, body := rawCall(hc, reps[0].url, token, "demo__list_files", 9); status != tc.status {
				t.Errorf("call after the %s on another replica = %d %s; want %d", tc.name, status, body, tc.status)
			}
		})
	}
}
