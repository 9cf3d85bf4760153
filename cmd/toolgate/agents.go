package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/toolgate/toolgate/gateway"
)

const agentsUsage = `toolgate agents <command> AGENT [flags]

Commands:
  show AGENT                  the agent's lock and sessions
  lock AGENT                  refuse new sessions of the agent until unlock
  unlock AGENT                let the agent open sessions again
  revoke AGENT --reason R     revoke every live session of the agent

Every command takes --admin-url (env TOOLGATE_ADMIN_URL, default http://127.0.0.1:8081)
and --json; the admin token is read from env TOOLGATE_ADMIN_TOKEN.`

func runAgents(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(stderr, "Usage: "+agentsUsage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	sub, args := args[0], args[1:]
	switch sub {
	case "show":
		c := newAdminCmd("agents show", "agents show AGENT", 1, 1, stdout, stderr)
		pos, code := c.parse(args)
		if code >= 0 {
			return code
		}
		return c.call(ctx, func(ctx context.Context, ac *gateway.AdminClient) (any, error) {
			return ac.Agent(ctx, pos[0])
		}, func(w io.Writer, v any) {
			st := v.(*gateway.AgentStatus)
			lock := "unlocked"
			if st.Locked {
				lock = "locked: no new sessions"
			}
			fmt.Fprintf(w, "agent %s is %s\n", st.Agent, lock)
			if len(st.Sessions) == 0 {
				fmt.Fprintln(w, "no sessions")
			} else {
				printSessionTable(w, st.Sessions)
			}
			if st.Next != "" {
				fmt.Fprintf(w, "more: toolgate sessions ls --agent %s --cursor %s\n", st.Agent, st.Next)
			}
		})
	case "lock", "unlock":
		c := newAdminCmd("agents "+sub, "agents "+sub+" AGENT", 1, 1, stdout, stderr)
		pos, code := c.parse(args)
		if code >= 0 {
			return code
		}
		return c.call(ctx, func(ctx context.Context, ac *gateway.AdminClient) (any, error) {
			if sub == "lock" {
				return ac.LockAgent(ctx, pos[0])
			}
			return ac.UnlockAgent(ctx, pos[0])
		}, func(w io.Writer, v any) {
			st := v.(*gateway.AgentStatus)
			if st.Locked {
				fmt.Fprintf(w, "agent %s locked: it cannot open sessions until unlocked (open sessions go on; revoke them with toolgate agents revoke)\n", st.Agent)
			} else {
				fmt.Fprintf(w, "agent %s unlocked\n", st.Agent)
			}
		})
	case "revoke":
		c := newAdminCmd("agents revoke", "agents revoke AGENT --reason R", 1, 1, stdout, stderr)
		reason := c.fs.String("reason", "", "why (required)")
		pos, code := c.parse(args)
		if code >= 0 {
			return code
		}
		if strings.TrimSpace(*reason) == "" {
			fmt.Fprintln(stderr, "toolgate agents revoke: --reason is required: say why the sessions end")
			return 2
		}
		return c.call(ctx, func(ctx context.Context, ac *gateway.AdminClient) (any, error) {
			return ac.RevokeAgent(ctx, pos[0], *reason)
		}, func(w io.Writer, v any) {
			r := v.(*gateway.RevokeAgentResult)
			fmt.Fprintf(w, "agent %s: %d session(s) revoked\n", r.Agent, r.Revoked)
		})
	}
	fmt.Fprintf(stderr, "toolgate agents: unknown command %q\n\nUsage: %s\n", sub, agentsUsage)
	return 2
}
