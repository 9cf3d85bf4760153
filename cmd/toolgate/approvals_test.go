package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/toolgate/toolgate/gateway"
)

func TestApprovalsCommand(t *testing.T) {
	srv := newAdminServer(t, nil)
	type answer struct {
		ok  bool
		why string
	}
	// Two calls held the way the decision path holds them.
	hold := func(tool string) chan answer {
		ch := make(chan answer, 1)
		go func() {
			ok, why := srv.gw.Approvals().Wait(context.Background(), gateway.PendingApproval{
				SessionID: strings.Repeat("1", 32), Agent: "agent-1", Tool: tool, Rule: "needs-approval"})
			ch <- answer{ok, why}
		}()
		return ch
	}
	deploy, shell := hold("demo__deploy"), hold("demo__run_shell")
	var ids map[string]string
	deadline := time.Now().Add(10 * time.Second)
	for len(ids) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the held calls never showed as pending")
		}
		ids = map[string]string{}
		for _, p := range srv.gw.Approvals().List() {
			ids[p.Tool] = p.ID
		}
		time.Sleep(5 * time.Millisecond)
	}
	wait := func(name string, ch chan answer, wantOK bool, wantWhy string) func(t *testing.T, _ string) {
		return func(t *testing.T, _ string) {
			select {
			case a := <-ch:
				if a.ok != wantOK || a.why != wantWhy {
					t.Errorf("%s held call = %v %q; want %v %q", name, a.ok, a.why, wantOK, wantWhy)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("%s held call never answered", name)
			}
		}
	}
	runCLI(t, srv.url, []cliCase{
		{args: []string{"approvals", "ls"}, stdout: ids["demo__deploy"]},
		{args: []string{"approvals", "ls"}, stdout: "demo__run_shell"},
		{args: []string{"approvals", "ls", "--json"}, stdout: `"rule": "needs-approval"`},
		{args: []string{"approvals", "approve", ids["demo__deploy"], "--by", "alice"}, stdout: "approved",
			inspect: wait("demo__deploy", deploy, true, "approved by alice")},
		{args: []string{"approvals", "reject", ids["demo__run_shell"], "--by", "bob"}, stdout: "rejected",
			inspect: wait("demo__run_shell", shell, false, "rejected by bob")},
		{args: []string{"approvals", "approve", ids["demo__deploy"]}, code: 1, stderr: "not pending"},
		{args: []string{"approvals", "ls"}, stdout: "no calls waiting"},
		{args: []string{"approvals", "approve"}, code: 2, stderr: "Usage"},
	})
}
