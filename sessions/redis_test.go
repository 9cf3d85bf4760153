package sessions_test

import (
	"testing"

	"github.com/toolgate/toolgate/sessions"
	"github.com/toolgate/toolgate/sessions/sessionstest"
)

func TestRedisContract(t *testing.T) {
	srv := sessionstest.StartRedis(t)
	c := srv.Client()
	for _, tt := range []struct {
		name  string
		block int
		cfg   sessionstest.Config
	}{
		{"DefaultBlocks", 0, sessionstest.Config{}},
		// Tiny blocks exercise sealing and block trimming in every contract test. The full
		// revoke race runs once above; these variants only need a few trials.
		{"Blocks2", 2, sessionstest.Config{RaceTrials: 20}},
		{"Uncompressed", -1, sessionstest.Config{RaceTrials: 20}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sessionstest.RunConfig(t, tt.cfg, func(t *testing.T, clock sessions.Clock) sessions.Store {
				return sessions.NewRedis(c, sessions.RedisOptions{
					Options:      sessions.Options{Clock: clock},
					Prefix:       sessionstest.Prefix(),
					HistoryBlock: tt.block,
				})
			})
		})
	}
}
