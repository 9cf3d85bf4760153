package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/toolgate/toolgate/gateway"
)

// This file holds the sessions command and the flags and output shared by
// every command that talks to the admin API (sessions, agents, approvals,
// policy status|reload).

// Environment of the admin commands. The token is read only from the
// environment: a flag would show it in ps.
const (
	adminURLEnv     = "TOOLGATE_ADMIN_URL"
	adminTokenEnv   = "TOOLGATE_ADMIN_TOKEN"
	defaultAdminURL = "http://127.0.0.1:8081"
	adminTimeout    = 30 * time.Second
)

// adminCmd is one admin API subcommand's flags.
type adminCmd struct {
	fs      *flag.FlagSet
	url     *string
	json    *bool
	stdout  io.Writer
	stderr  io.Writer
	usage   string
	minArgs int
	maxArgs int // -1: any
}

// newAdminCmd prepares the flags of "toolgate <name>"; usage is its
// synopsis, nargs bounds its positional arguments.
func newAdminCmd(name, usage string, minArgs, maxArgs int, stdout, stderr io.Writer) *adminCmd {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	def := os.Getenv(adminURLEnv)
	if def == "" {
		def = defaultAdminURL
	}
	c := &adminCmd{fs: fs, stdout: stdout, stderr: stderr, usage: usage, minArgs: minArgs, maxArgs: maxArgs}
	c.url = fs.String("admin-url", def, "admin API base URL (env "+adminURLEnv+"); the token comes from env "+adminTokenEnv)
	c.json = fs.Bool("json", false, "print the API's JSON instead of a table")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: toolgate %s\n\nFlags:\n", usage)
		fs.PrintDefaults()
	}
	return c
}

// parse parses flags placed anywhere among the positional arguments and
// returns those. A code of 0 or more means stop and exit with it: 0 after
// -h, 2 after a usage error (already reported).
func (c *adminCmd) parse(args []string) (pos []string, code int) {
	for {
		if err := c.fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, 0
			}
			return nil, 2
		}
		rest := c.fs.Args()
		if len(rest) == 0 {
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	if len(pos) < c.minArgs || (c.maxArgs >= 0 && len(pos) > c.maxArgs) {
		fmt.Fprintf(c.stderr, "Usage: toolgate %s\n", c.usage)
		return nil, 2
	}
	return pos, -1
}

func (c *adminCmd) client() (*gateway.AdminClient, error) {
	token := os.Getenv(adminTokenEnv)
	if token == "" {
		return nil, fmt.Errorf("%s is not set: export the admin token in it", adminTokenEnv)
	}
	return gateway.NewAdminClient(*c.url, token, nil)
}

// call runs f with a client and a deadline, prints the result with human
// (or as JSON with --json) and returns the exit code.
func (c *adminCmd) call(ctx context.Context, f func(ctx context.Context, ac *gateway.AdminClient) (any, error), human func(w io.Writer, v any)) int {
	ac, err := c.client()
	if err != nil {
		fmt.Fprintln(c.stderr, "toolgate:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	v, err := f(ctx, ac)
	if err != nil {
		var apiErr *gateway.AdminAPIError
		if errors.As(err, &apiErr) && *c.json {
			_ = writeIndented(c.stdout, apiErr.AdminErrorBody)
		}
		fmt.Fprintln(c.stderr, "toolgate:", err)
		return 1
	}
	if *c.json {
		if err := writeIndented(c.stdout, v); err != nil {
			fmt.Fprintln(c.stderr, "toolgate:", err)
			return 1
		}
		return 0
	}
	human(c.stdout, v)
	return 0
}

func writeIndented(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func shortTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

const sessionsUsage = `toolgate sessions <command> [flags]

Commands:
  ls [--agent A] [--state S] [--limit N] [--cursor C]   list sessions
  show ID                                               one session with its history
  narrow ID [TOOL...] [--label L]...                    remove tools (names or globs) or labels
  freeze ID [--reason R]                                stop calls until resume
  resume ID                                             let a frozen session call again
  revoke ID --reason R                                  end a session for good

Every command takes --admin-url (env TOOLGATE_ADMIN_URL, default http://127.0.0.1:8081)
and --json; the admin token is read from env TOOLGATE_ADMIN_TOKEN.`

// repeated is a flag that may be given several times.
type repeated []string

func (r *repeated) String() string     { return strings.Join(*r, ",") }
func (r *repeated) Set(s string) error { *r = append(*r, s); return nil }

func runSessions(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(stderr, "Usage: "+sessionsUsage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	sub, args := args[0], args[1:]
	switch sub {
	case "ls", "list":
		c := newAdminCmd("sessions ls", "sessions ls [--agent A] [--state active|frozen|revoked|expired] [--limit N] [--cursor C]", 0, 0, stdout, stderr)
		var f gateway.SessionFilter
		c.fs.StringVar(&f.Agent, "agent", "", "only this agent's sessions")
		c.fs.StringVar(&f.State, "state", "", "only sessions in this state: active, frozen, revoked or expired")
		c.fs.IntVar(&f.Limit, "limit", 0, "at most this many sessions (1..1000; default 1000)")
		c.fs.StringVar(&f.Cursor, "cursor", "", "continue after a previous page (its \"next\")")
		if _, code := c.parse(args); code >= 0 {
			return code
		}
		return c.call(ctx, func(ctx context.Context, ac *gateway.AdminClient) (any, error) {
			return ac.ListSessions(ctx, f)
		}, func(w io.Writer, v any) { printSessionPage(w, v.(*gateway.SessionPage)) })
	case "show":
		c := newAdminCmd("sessions show", "sessions show ID", 1, 1, stdout, stderr)
		pos, code := c.parse(args)
		if code >= 0 {
			return code
		}
		return c.call(ctx, func(ctx context.Context, ac *gateway.AdminClient) (any, error) {
			return ac.Session(ctx, pos[0])
		}, func(w io.Writer, v any) { printSession(w, v.(*gateway.AdminSession)) })
	case "narrow":
		c := newAdminCmd("sessions narrow", "sessions narrow ID [TOOL...] [--label LABEL]...", 1, -1, stdout, stderr)
		var labels repeated
		c.fs.Var(&labels, "label", "remove every tool with this label (repeatable)")
		pos, code := c.parse(args)
		if code >= 0 {
			return code
		}
		if len(pos) == 1 && len(labels) == 0 {
			fmt.Fprintln(stderr, "toolgate sessions narrow: name the tools (or --label) to remove; narrowing only removes")
			return 2
		}
		req := gateway.NarrowRequest{Tools: pos[1:], Labels: labels}
		return c.call(ctx, func(ctx context.Context, ac *gateway.AdminClient) (any, error) {
			return ac.Narrow(ctx, pos[0], req)
		}, func(w io.Writer, v any) {
			s := v.(*gateway.AdminSession)
			fmt.Fprintf(w, "session %s narrowed; removed: %s\n", s.ID, strings.Join(s.Removed, ", "))
		})
	case "freeze":
		c := newAdminCmd("sessions freeze", "sessions freeze ID [--reason R]", 1, 1, stdout, stderr)
		reason := c.fs.String("reason", "", "why (shown to the agent)")
		pos, code := c.parse(args)
		if code >= 0 {
			return code
		}
		return c.call(ctx, func(ctx context.Context, ac *gateway.AdminClient) (any, error) {
			return ac.Freeze(ctx, pos[0], *reason)
		}, printStateChange)
	case "resume":
		c := newAdminCmd("sessions resume", "sessions resume ID", 1, 1, stdout, stderr)
		pos, code := c.parse(args)
		if code >= 0 {
			return code
		}
		return c.call(ctx, func(ctx context.Context, ac *gateway.AdminClient) (any, error) {
			return ac.Resume(ctx, pos[0])
		}, printStateChange)
	case "revoke":
		c := newAdminCmd("sessions revoke", "sessions revoke ID --reason R", 1, 1, stdout, stderr)
		reason := c.fs.String("reason", "", "why (required)")
		pos, code := c.parse(args)
		if code >= 0 {
			return code
		}
		if strings.TrimSpace(*reason) == "" {
			fmt.Fprintln(stderr, "toolgate sessions revoke: --reason is required: say why the session ends")
			return 2
		}
		return c.call(ctx, func(ctx context.Context, ac *gateway.AdminClient) (any, error) {
			return ac.Revoke(ctx, pos[0], *reason)
		}, printStateChange)
	}
	fmt.Fprintf(stderr, "toolgate sessions: unknown command %q\n\nUsage: %s\n", sub, sessionsUsage)
	return 2
}

func printStateChange(w io.Writer, v any) {
	s := v.(*gateway.AdminSession)
	if s.Reason != "" {
		fmt.Fprintf(w, "session %s is %s: %s\n", s.ID, s.State, s.Reason)
		return
	}
	fmt.Fprintf(w, "session %s is %s\n", s.ID, s.State)
}

func printSessionPage(w io.Writer, p *gateway.SessionPage) {
	if len(p.Sessions) == 0 {
		fmt.Fprintln(w, "no sessions")
	} else {
		printSessionTable(w, p.Sessions)
	}
	if p.Next != "" {
		fmt.Fprintf(w, "more: --cursor %s\n", p.Next)
	}
}

func printSessionTable(w io.Writer, list []*gateway.AdminSession) {
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tAGENT\tPROFILE\tSTATE\tCALLS\tDENIED\tRISK\tEXPIRES\tREASON")
	for _, s := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%.2f\t%s\t%s\n", s.ID, s.Agent, orDash(s.Profile), s.State,
			s.Calls, s.Denied, s.Risk, shortTime(s.Expires), orDash(s.Reason))
	}
	_ = tw.Flush()
}

func printSession(w io.Writer, s *gateway.AdminSession) {
	tw := newTable(w)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("Session", s.ID)
	row("Agent", s.Agent)
	row("Profile", orDash(s.Profile))
	state := string(s.State)
	if s.Reason != "" {
		state += " (" + s.Reason + ")"
	}
	row("State", state)
	row("Scope", strings.Join(s.Scope, " "))
	row("Removed", orDash(strings.Join(s.Removed, " ")))
	row("Labels", orDash(strings.Join(s.Labels, " ")))
	row("Created", shortTime(s.Created))
	row("Expires", shortTime(s.Expires))
	row("Idle timeout", orDash(s.IdleTimeout))
	row("Last activity", shortTime(s.LastActivity))
	budget := "none"
	if s.Budget > 0 {
		budget = fmt.Sprint(s.Budget)
	}
	row("Calls", fmt.Sprintf("%d allowed, %d denied (budget %s)", s.Calls, s.Denied, budget))
	row("Risk", fmt.Sprintf("%.2f", s.Risk))
	_ = tw.Flush()
	if len(s.History) == 0 {
		fmt.Fprintln(w, "\nNo calls yet.")
		return
	}
	fmt.Fprintf(w, "\nHistory (last %d of at most %d):\n", len(s.History), s.HistoryLimit)
	tw = newTable(w)
	fmt.Fprintln(tw, "SEQ\tTIME\tTOOL\tDECISION\tRULES\tTAGS")
	for _, h := range s.History {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", h.Seq, shortTime(h.Time), h.Name, h.Decision,
			orDash(strings.Join(h.Rules, ",")), orDash(strings.Join(h.ResultTags, ",")))
	}
	_ = tw.Flush()
}
