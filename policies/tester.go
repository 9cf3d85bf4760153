package policies

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Policy tests sit next to the policies, in files named *_test.yaml:
//
//	tools:                      # labels, as the tools config gives them
//	  demo__read_secret: [credential]
//	cases:
//	  - name: a secret read then a send is denied
//	    session: {profile: dev, scope: ["demo__*"]}
//	    calls:
//	      - {tool: demo__read_secret, args: {name: db}, want: allow}
//	      - {tool: demo__http_request, at: 1m, want: deny, want_rule: no-exfil}
type testFile struct {
	Tools map[string][]string `yaml:"tools"`
	Cases []testCase          `yaml:"cases"`
}

type testCase struct {
	Name    string      `yaml:"name"`
	Session testSession `yaml:"session"`
	Calls   []testCall  `yaml:"calls"`
}

type testSession struct {
	ID         string            `yaml:"id"`
	Agent      string            `yaml:"agent"`
	Profile    string            `yaml:"profile"`
	Labels     map[string]string `yaml:"labels"`
	Scope      []string          `yaml:"scope"`        // default ["*"]
	OutOfScope Action            `yaml:"out_of_scope"` // deny (default) or revoke
	Start      string            `yaml:"start"`        // RFC 3339; default 2026-01-05T10:00:00Z, a Monday
	TTL        string            `yaml:"ttl"`          // default 1h
	Claims     map[string]any    `yaml:"claims"`
	Risk       float64           `yaml:"risk"`
}

type testCall struct {
	Tool       string         `yaml:"tool"` // namespaced name, server__tool
	Args       map[string]any `yaml:"args"`
	Labels     []string       `yaml:"labels"` // default: from tools
	ResultTags []string       `yaml:"result_tags"`
	At         string         `yaml:"at"` // offset from the session start; default 1s after the previous call
	Flags      []testFlag     `yaml:"flags"`
	Want       Action         `yaml:"want"`
	WantRule   string         `yaml:"want_rule"`
}

type testFlag struct {
	Kind   string  `yaml:"kind"`
	Detail string  `yaml:"detail"`
	Score  float64 `yaml:"score"`
}

var defaultTestStart = time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC)

// TestOptions tune RunTests.
type TestOptions struct {
	Options
	// Timeout bounds each case; zero means 5s.
	Timeout time.Duration
	// Verbose prints every case, not only failures.
	Verbose bool
	// Run keeps only cases whose name contains it; empty keeps all.
	Run string
}

// RunTests loads the policies under paths, runs the cases of every
// *_test.yaml file found there, and writes a report in the manner of go
// test to w. ok is false if any case failed; err is set if the policies or
// a test file could not be loaded (then nothing runs).
func RunTests(paths []string, w io.Writer, opts TestOptions) (ok bool, err error) {
	if opts.Timeout == 0 {
		opts.Timeout = 5 * time.Second
	}
	set, err := Load(paths, opts.Options)
	if err != nil {
		return false, err
	}
	files, err := findFiles(paths, true)
	if err != nil {
		return false, fmt.Errorf("find policy tests: %w", err)
	}
	if len(files) == 0 {
		fmt.Fprintf(w, "?   \t%s\t[no test files]\n", strings.Join(paths, " "))
		return true, nil
	}
	parsed := make([]testFile, len(files))
	var problems []Problem
	for i, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return false, fmt.Errorf("read policy test: %w", err)
		}
		if err := decodeStrict(data, &parsed[i]); err != nil {
			problems = append(problems, Problem{File: f, Message: err.Error()})
			continue
		}
		problems = append(problems, parsed[i].validate(f)...)
	}
	if len(problems) > 0 {
		return false, fmt.Errorf("load policy tests: %w", &LoadError{Problems: problems})
	}

	// Report per folder, as go test reports per package.
	type tally struct {
		cases, failed int
		elapsed       time.Duration
	}
	var dirs []string
	byDir := map[string]*tally{}
	ok = true
	for i, f := range files {
		dir := filepath.Dir(f)
		t := byDir[dir]
		if t == nil {
			t = &tally{}
			byDir[dir] = t
			dirs = append(dirs, dir)
		}
		for _, c := range parsed[i].Cases {
			if opts.Run != "" && !strings.Contains(c.Name, opts.Run) {
				continue
			}
			t.cases++
			start := time.Now()
			if opts.Verbose {
				fmt.Fprintf(w, "=== RUN   %s: case %q\n", f, c.Name)
			}
			fails := runCase(set, &parsed[i], &c, opts.Timeout)
			t.elapsed += time.Since(start)
			if len(fails) > 0 {
				t.failed++
				ok = false
				for _, msg := range fails {
					fmt.Fprintf(w, "--- FAIL: %s: case %q: %s\n", f, c.Name, msg)
				}
			} else if opts.Verbose {
				fmt.Fprintf(w, "--- PASS: %s: case %q\n", f, c.Name)
			}
		}
	}
	for _, dir := range dirs {
		t := byDir[dir]
		if t.failed > 0 {
			fmt.Fprintf(w, "FAIL\t%s\t%d cases, %d failed (%.3fs)\n", dir, t.cases, t.failed, t.elapsed.Seconds())
		} else {
			fmt.Fprintf(w, "ok  \t%s\t%d cases (%.3fs)\n", dir, t.cases, t.elapsed.Seconds())
		}
	}
	return ok, nil
}

func (tf *testFile) validate(file string) []Problem {
	var probs []Problem
	add := func(where, format string, args ...any) {
		probs = append(probs, Problem{File: file, Where: where, Message: fmt.Sprintf(format, args...)})
	}
	if len(tf.Cases) == 0 {
		add("", "no cases: add a cases list")
	}
	names := map[string]bool{}
	for i, c := range tf.Cases {
		where := fmt.Sprintf("cases[%d] (%q)", i, c.Name)
		if c.Name == "" {
			add(where, "name is missing: name every case")
		} else if names[c.Name] {
			add(where, "name is used twice in this file: make case names unique")
		}
		names[c.Name] = true
		s := c.Session
		if s.OutOfScope != "" && s.OutOfScope != ActionDeny && s.OutOfScope != ActionRevoke {
			add(where+".session.out_of_scope", "%q is not deny or revoke", s.OutOfScope)
		}
		if s.Start != "" {
			if _, err := time.Parse(time.RFC3339, s.Start); err != nil {
				add(where+".session.start", "%q is not an RFC 3339 time such as 2026-01-05T10:00:00Z", s.Start)
			}
		}
		if s.TTL != "" {
			if _, err := time.ParseDuration(s.TTL); err != nil {
				add(where+".session.ttl", "%q is not a duration such as 1h", s.TTL)
			}
		}
		if len(c.Calls) == 0 {
			add(where, "no calls: add a calls list")
		}
		for j, call := range c.Calls {
			cw := fmt.Sprintf("%s.calls[%d]", where, j)
			if call.Tool == "" {
				add(cw, "tool is missing: give the namespaced tool name, such as demo__read_file")
			}
			if !call.Want.Valid() {
				add(cw, "want %q is not one of allow, deny, require_approval, narrow, revoke", call.Want)
			}
			if call.At != "" {
				if _, err := time.ParseDuration(call.At); err != nil {
					add(cw+".at", "%q is not a duration such as 90s or 10m", call.At)
				}
			}
		}
	}
	return probs
}

// runCase plays a case's calls in order, as a live session would see
// them, and returns one message per mismatch.
func runCase(set *Set, tf *testFile, c *testCase, timeout time.Duration) []string {
	done := make(chan []string, 1)
	go func() { done <- playCase(set, tf, c) }()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case fails := <-done:
		return fails
	case <-timer.C:
		return []string{fmt.Sprintf("timed out after %v", timeout)}
	}
}

func playCase(set *Set, tf *testFile, c *testCase) []string {
	s := c.Session
	start := defaultTestStart
	if s.Start != "" {
		start, _ = time.Parse(time.RFC3339, s.Start) // validated
	}
	ttl := time.Hour
	if s.TTL != "" {
		ttl, _ = time.ParseDuration(s.TTL)
	}
	scope := Scope{Tools: s.Scope}
	if len(scope.Tools) == 0 {
		scope.Tools = []string{"*"}
	}
	outOfScope := s.OutOfScope
	if outOfScope == "" {
		outOfScope = ActionDeny
	}
	sess := Session{ID: s.ID, Agent: s.Agent, Profile: s.Profile, Labels: s.Labels,
		Started: start, Expires: start.Add(ttl), Risk: s.Risk}
	if sess.ID == "" {
		sess.ID = "test-session"
	}
	var history []HistoryEntry
	var fails []string
	revoked := false
	at := time.Duration(0)
	for i, tc := range c.Calls {
		if tc.At != "" {
			at, _ = time.ParseDuration(tc.At)
		} else if i > 0 {
			at += time.Second
		}
		now := start.Add(at)
		args, err := json.Marshal(orEmpty(tc.Args))
		if err != nil {
			fails = append(fails, fmt.Sprintf("call %d (%s): args: %v", i+1, tc.Tool, err))
			continue
		}
		labels := tc.Labels
		if labels == nil {
			labels = tf.Tools[tc.Tool]
		}
		server, tool := splitName(tc.Tool)
		var d Decision
		if revoked {
			// A revoked session is refused before policy runs.
			d = Decision{Action: ActionRevoke, Message: "session revoked"}
		} else {
			sess.Scope = scope.Tools
			in := &Input{
				Call:    Call{Server: server, Tool: tool, Name: tc.Tool, Method: "tools/call", Args: args, Labels: labels},
				Session: sess,
				History: history,
				Agent:   s.Claims,
				Now:     now,
			}
			for _, f := range tc.Flags {
				in.Flags = append(in.Flags, Flag(f))
			}
			if !scope.Permits(tc.Tool, labels) {
				in.OutOfScope = outOfScope
			}
			d = set.Decide(in)
		}
		if d.Action != tc.Want || (tc.WantRule != "" && d.Rule != tc.WantRule) {
			got := string(d.Action)
			if d.Rule != "" {
				got += fmt.Sprintf(" (rule %s)", d.Rule)
			} else if d.Action != ActionAllow && !revoked {
				got += " (out of scope)"
			}
			want := string(tc.Want)
			if tc.WantRule != "" {
				want += fmt.Sprintf(" (rule %s)", tc.WantRule)
			}
			msg := fmt.Sprintf("call %d (%s): got %s, want %s", i+1, tc.Tool, got, want)
			for _, e := range d.Errors {
				msg += fmt.Sprintf("; rule %s error: %s", e.Rule, e.Detail)
			}
			fails = append(fails, msg)
		}
		if revoked {
			continue
		}
		// Record the call as the gateway would.
		history = append(history, HistoryEntry{Server: server, Tool: tool, Name: tc.Tool, Args: args,
			Decision: string(d.Action), Time: now, Labels: labels, ResultTags: tc.ResultTags})
		sess.Calls++
		if d.Action == ActionDeny || d.Action == ActionRevoke {
			sess.Denied++
		}
		if !d.Narrow.Empty() {
			scope = scope.Narrow(d.Narrow)
		}
		if d.Action == ActionRevoke {
			revoked = true
		}
	}
	return fails
}

func orEmpty(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}

// splitName splits a namespaced tool name "server__tool".
func splitName(name string) (server, tool string) {
	if s, t, ok := strings.Cut(name, "__"); ok {
		return s, t
	}
	return "", name
}
