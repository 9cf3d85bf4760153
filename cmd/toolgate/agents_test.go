package main

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/sessions"
)

func TestAgentsCommand(t *testing.T) {
	srv := newAdminServer(t, nil)
	srv.open(t, "agent-1")
	srv.open(t, "agent-1")
	other := srv.open(t, "agent-2")
	create := func(agent string) error {
		_, _, err := srv.store.Create(context.Background(), sessions.Spec{Agent: agent, Scope: []string{"*"}, Lifetime: time.Hour})
		return err
	}
	runCLI(t, srv.url, []cliCase{
		{args: []string{"agents", "lock", "agent-1"}, stdout: "agent agent-1 locked"},
		{args: []string{"agents", "show", "agent-1", "--json"}, inspect: func(t *testing.T, out string) {
			var st gateway.AgentStatus
			if err := json.Unmarshal([]byte(out), &st); err != nil || !st.Locked || len(st.Sessions) != 2 {
				t.Errorf("agents show --json = %s (%v); want locked with 2 sessions", out, err)
			}
			if err := create("agent-1"); !errors.Is(err, sessions.ErrAgentLocked) {
				t.Errorf("Create for a locked agent = %v; want ErrAgentLocked", err)
			}
		}},
		{args: []string{"agents", "show", "agent-1"}, stdout: "locked: no new sessions"},
		{args: []string{"agents", "unlock", "agent-1"}, stdout: "agent agent-1 unlocked", inspect: func(t *testing.T, _ string) {
			if err := create("agent-1"); err != nil {
				t.Errorf("Create after unlock = %v; want a session", err)
			}
		}},
		{args: []string{"agents", "revoke", "agent-1"}, code: 2, stderr: "--reason is required"},
		{args: []string{"agents", "revoke", "agent-1", "--reason", "offboarded"}, stdout: "3 session(s) revoked"},
		{args: []string{"agents", "revoke", "agent-1", "--reason", "again", "--json"}, stdout: `"revoked": 0`},
		{args: []string{"agents", "lock"}, code: 2, stderr: "Usage"},
		{args: []string{"agents", "frobnicate", "agent-1"}, code: 2, stderr: `unknown command "frobnicate"`},
	})
	if s, err := srv.store.Get(context.Background(), other); err != nil || s.State != sessions.StateActive {
		t.Errorf("agent-2's session after agent-1's revoke = %+v, %v; want active", s, err)
	}
}
