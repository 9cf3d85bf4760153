package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/toolgate/toolgate/gateway"
)

const approvalsUsage = `toolgate approvals <command> [flags]

Commands:
  ls                       calls waiting for approval
  approve ID [--by NAME]   let the call go
  reject ID [--by NAME]    refuse the call

Every command takes --admin-url (env TOOLGATE_ADMIN_URL, default http://127.0.0.1:8081)
and --json; the admin token is read from env TOOLGATE_ADMIN_TOKEN.`

func runApprovals(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(stderr, "Usage: "+approvalsUsage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	sub, args := args[0], args[1:]
	switch sub {
	case "ls", "list":
		c := newAdminCmd("approvals ls", "approvals ls", 0, 0, stdout, stderr)
		if _, code := c.parse(args); code >= 0 {
			return code
		}
		return c.call(ctx, func(ctx context.Context, ac *gateway.AdminClient) (any, error) {
			return ac.Approvals(ctx)
		}, func(w io.Writer, v any) { printApprovals(w, v.(*gateway.ApprovalList).Approvals) })
	case "approve", "reject":
		c := newAdminCmd("approvals "+sub, "approvals "+sub+" ID [--by NAME]", 1, 1, stdout, stderr)
		by := c.fs.String("by", os.Getenv("USER"), "who decides (told to the agent and logged)")
		pos, code := c.parse(args)
		if code >= 0 {
			return code
		}
		return c.call(ctx, func(ctx context.Context, ac *gateway.AdminClient) (any, error) {
			return ac.Resolve(ctx, pos[0], sub == "approve", *by)
		}, func(w io.Writer, v any) {
			r := v.(*gateway.ResolveResult)
			verb := "rejected"
			if r.Approved {
				verb = "approved"
			}
			fmt.Fprintf(w, "call %s %s\n", r.ID, verb)
		})
	}
	fmt.Fprintf(stderr, "toolgate approvals: unknown command %q\n\nUsage: %s\n", sub, approvalsUsage)
	return 2
}

func printApprovals(w io.Writer, list []gateway.PendingApproval) {
	if len(list) == 0 {
		fmt.Fprintln(w, "no calls waiting for approval")
		return
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tAGENT\tSESSION\tTOOL\tRULE\tWAITING\tDEADLINE\tARGS")
	now := time.Now()
	for _, p := range list {
		args := string(p.Args)
		if len(args) > 60 {
			args = args[:57] + "..."
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.ID, p.Agent, p.SessionID, p.Tool, orDash(p.Rule),
			now.Sub(p.Created).Round(time.Second), shortTime(p.Deadline), orDash(args))
	}
	_ = tw.Flush()
}
