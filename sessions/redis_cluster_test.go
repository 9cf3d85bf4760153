package sessions_test

import (
	"os"
	"testing"

	"github.com/toolgate/toolgate/internal/faults"
	"github.com/toolgate/toolgate/sessions"
	"github.com/toolgate/toolgate/sessions/sessionstest"
)

// TestRedisClusterContract runs the whole store contract, revoke race
// included, on a real three-master Redis Cluster: every session's keys
// share one hash slot, the indexes live in other slots, and events published
// from a script on one master reach subscribers connected to another.
func TestRedisClusterContract(t *testing.T) {
	if testing.Short() || os.Getenv("TOOLGATE_CLUSTER") == "" {
		t.Skip("starts a three-node Redis Cluster and runs the whole contract (~30 s with -race): set TOOLGATE_CLUSTER=1")
	}
	cluster := faults.StartCluster(t, 3)
	c := cluster.Client(t, 64)
	sessionstest.RunConfig(t, sessionstest.Config{}, func(t *testing.T, clock sessions.Clock) sessions.Store {
		return sessions.NewRedis(c, sessions.RedisOptions{
			Options: sessions.Options{Clock: clock},
			Prefix:  sessionstest.Prefix(),
		})
	})
}
