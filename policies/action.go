package policies

import (
	"fmt"
	"slices"
	"strings"
)

// Action is what a decision does with a call.
type Action string

// Actions, from the least to the most strict.
const (
	ActionAllow           Action = "allow"
	ActionNarrow          Action = "narrow"
	ActionRequireApproval Action = "require_approval"
	ActionDeny            Action = "deny"
	ActionRevoke          Action = "revoke"
)

// strictness orders actions: the strictest matching action wins.
func (a Action) strictness() int {
	switch a {
	case ActionAllow:
		return 1
	case ActionNarrow:
		return 2
	case ActionRequireApproval:
		return 3
	case ActionDeny:
		return 4
	case ActionRevoke:
		return 5
	}
	return 0
}

// Valid reports whether a is one of the five actions.
func (a Action) Valid() bool { return a.strictness() > 0 }

// Stricter reports whether a is stricter than b.
func (a Action) Stricter(b Action) bool { return a.strictness() > b.strictness() }

// Forwards reports whether a call with this action may go to its tool
// server without a human: allow and narrow.
func (a Action) Forwards() bool { return a == ActionAllow || a == ActionNarrow }

// Mode says whether a rule's action is enforced or only reported.
type Mode string

// Modes.
const (
	ModeEnforce Mode = "enforce"
	ModeShadow  Mode = "shadow"
)

// Severity ranks a rule for alerting; it does not change the decision.
type Severity string

// Severities.
const (
	SeverityLow      Severity = "low"
	SeverityMedium   Severity = "medium"
	SeverityHigh     Severity = "high"
	SeverityCritical Severity = "critical"
)

func (s Severity) valid() bool {
	switch s {
	case SeverityLow, SeverityMedium, SeverityHigh, SeverityCritical:
		return true
	}
	return false
}

// Narrowing is what a narrow rule removes from the session's scope.
type Narrowing struct {
	Tools  []string `yaml:"tools" json:"tools,omitempty"`   // tool-name globs
	Labels []string `yaml:"labels" json:"labels,omitempty"` // tool labels
}

// Empty reports whether n removes nothing.
func (n Narrowing) Empty() bool { return len(n.Tools) == 0 && len(n.Labels) == 0 }

// Covers reports whether a tool with this name and labels is removed by n.
func (n Narrowing) Covers(name string, labels []string) bool {
	for _, p := range n.Tools {
		if Glob(p, name) {
			return true
		}
	}
	for _, l := range n.Labels {
		if slices.Contains(labels, l) {
			return true
		}
	}
	return false
}

func (n *Narrowing) add(o Narrowing) {
	for _, t := range o.Tools {
		if !slices.Contains(n.Tools, t) {
			n.Tools = append(n.Tools, t)
		}
	}
	for _, l := range o.Labels {
		if !slices.Contains(n.Labels, l) {
			n.Labels = append(n.Labels, l)
		}
	}
}

// Scope is a session's tool scope: the globs it was granted minus what
// narrow decisions removed since. Sessions may store scope their own way;
// this type is what the policy test runner uses and what a gateway can use
// to set Input.OutOfScope.
type Scope struct {
	Tools   []string  // granted tool-name globs; empty grants nothing
	Removed Narrowing // removed by narrow decisions
}

// Permits reports whether the session may call the named tool.
func (s Scope) Permits(name string, labels []string) bool {
	granted := false
	for _, p := range s.Tools {
		if Glob(p, name) {
			granted = true
			break
		}
	}
	return granted && !s.Removed.Covers(name, labels)
}

// Narrow returns the scope with n removed as well. s is not changed.
func (s Scope) Narrow(n Narrowing) Scope {
	out := Scope{Tools: slices.Clone(s.Tools)}
	out.Removed.add(s.Removed)
	out.Removed.add(n)
	return out
}

// Glob reports whether name matches pattern, where '*' matches any run of
// characters (including none) and '?' matches exactly one. There are no
// character classes and no escapes; matching is case-sensitive.
func Glob(pattern, name string) bool {
	g := compileGlob(pattern)
	return g.match(name)
}

// glob is a pattern of Glob ready to match many names.
type glob struct {
	pattern string
	// tail is the text after the last '*', which must end every name
	// that matches: checking it first rejects most names at once
	// ("*__read_secret" against a history of other tools).
	tail    string
	hasStar bool
	// all: the pattern is "*", common in countSince.
	all bool
}

func compileGlob(pattern string) glob {
	g := glob{pattern: pattern}
	if i := strings.LastIndexByte(pattern, '*'); i >= 0 {
		g.tail, g.hasStar = pattern[i+1:], true
		g.all = pattern == "*"
	}
	return g
}

func (g *glob) match(name string) bool {
	if g.all {
		return true
	}
	pattern := g.pattern
	if g.hasStar {
		if len(g.tail) > len(name) {
			return false
		}
		end := name[len(name)-len(g.tail):]
		for k := range len(g.tail) {
			if g.tail[k] != '?' && g.tail[k] != end[k] {
				return false
			}
		}
	}
	// Iterative matcher with one backtrack point: linear in practice and
	// allocation-free.
	p, n := 0, 0
	starP, starN := -1, 0
	for n < len(name) {
		if p < len(pattern) && (pattern[p] == '?' || pattern[p] == name[n]) {
			p++
			n++
			continue
		}
		if p < len(pattern) && pattern[p] == '*' {
			starP, starN = p, n
			p++
			continue
		}
		if starP >= 0 {
			starN++
			p, n = starP+1, starN
			continue
		}
		return false
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

func validGlob(p string) error {
	if p == "" {
		return fmt.Errorf("empty glob: use \"*\" to match everything")
	}
	return nil
}
