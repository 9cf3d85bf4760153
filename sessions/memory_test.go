package sessions_test

import (
	"testing"

	"github.com/toolgate/toolgate/sessions"
	"github.com/toolgate/toolgate/sessions/sessionstest"
)

func TestMemoryContract(t *testing.T) {
	sessionstest.Run(t, func(t *testing.T, clock sessions.Clock) sessions.Store {
		return sessions.NewMemory(sessions.Options{Clock: clock})
	})
}
