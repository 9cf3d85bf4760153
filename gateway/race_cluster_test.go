package gateway_test

import (
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/toolgate/toolgate/internal/faults"
	"github.com/toolgate/toolgate/sessions"
	"github.com/toolgate/toolgate/sessions/sessionstest"
)

// TestRevokeRaceOnCluster is the two-replica revoke race on a real
// three-master Redis Cluster, each replica with its own cluster client:
// the revoke commits on the master of the session's slot, the event reaches
// the other replica through the cluster bus. TOOLGATE_RACE_TRIALS sets the
// trials (50 by default, 1,000 in CI).
func TestRevokeRaceOnCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("long")
	}
	cluster := faults.StartCluster(t, 3)
	prefix := sessionstest.Prefix()
	revokeRace(t, func() sessions.Store {
		rc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cluster.Addrs(), PoolSize: 64})
		t.Cleanup(func() { _ = rc.Close() })
		return sessions.NewRedis(rc, sessions.RedisOptions{Prefix: prefix})
	})
}
