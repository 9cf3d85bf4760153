package policies

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"
)

// Input is everything one decision may look at. The gateway builds it from
// the session snapshot and the call; Decide never changes it.
type Input struct {
	Call    Call
	Session Session
	// History holds the session's earlier calls, oldest first.
	History []HistoryEntry
	// Agent holds the agent's identity claims (CEL: agent).
	Agent map[string]any
	// Now is the decision time (CEL: now). The zero value is an error.
	Now time.Time
	// Flags come from call-chain detectors (CEL: flags). May be empty.
	Flags []Flag
	// Taint holds the session's data-flow fingerprints (CEL: tainted,
	// taint_sources); DetectState.Taint gives it. Nil holds nothing.
	Taint *TaintSet
	// OutOfScope is set by the caller when the tool is outside the
	// session's scope (see Scope.Permits): it must be ActionDeny or
	// ActionRevoke, as the session's profile says. A non-empty value
	// refuses the call before any rule runs.
	OutOfScope Action
}

// Call is the tool call being decided (CEL: call).
type Call struct {
	Server string // upstream server, for example "demo"
	Tool   string // tool name on that server, for example "read_file"
	Name   string // namespaced name the agent sees, for example "demo__read_file"
	Method string // MCP method, normally "tools/call"
	// Args is the raw JSON object of arguments, parsed once per decision
	// (see ParseArgs for how numbers are mapped).
	Args   json.RawMessage
	Labels []string // tool labels from the tools config
}

// Session is the state of the calling session (CEL: session).
type Session struct {
	ID      string
	Agent   string
	Profile string
	Labels  map[string]string
	Started time.Time
	Expires time.Time
	Calls   int // calls made so far
	Denied  int // calls refused so far
	Risk    float64
	// Scope lists the tool-name globs the session may call (CEL:
	// session.scope).
	Scope []string
}

// HistoryEntry is one earlier call of the session (CEL: an element of
// history).
type HistoryEntry struct {
	Server     string
	Tool       string
	Name       string
	Args       json.RawMessage // parsed only if a rule reads it
	Decision   string          // the Action taken, for example "allow"
	Time       time.Time
	Labels     []string
	ResultTags []string // tags the result inspection attached
	// Seq is the entry's call number in its session: 1 for the session's
	// first call, unique and increasing within the session (a session
	// re-created with the same ID starts again at 1). Zero means unknown.
	// Decisions remember what history scans found in entries with a Seq
	// (scanmemo.go), so an entry with a given Seq must not change, except
	// for ResultTags, between decisions of one session.
	Seq int64
}

// Flag is a finding of a call-chain detector (CEL: an element of flags).
type Flag struct {
	Kind   string
	Detail string
	Score  float64
}

// ParseArgs parses a JSON object of tool arguments into the values CEL
// sees: objects become map[string]any, arrays []any, strings string,
// booleans bool, null nil. Numbers keep their exact value: an integer
// becomes int64 if it fits, else uint64 if it fits, else its decimal text
// as a string (so a 30-digit ID never turns into a rounded double); any
// other number becomes float64. Empty input is an empty object.
func ParseArgs(raw json.RawMessage) (map[string]any, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return map[string]any{}, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("parse arguments: %w", err)
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("parse arguments: want a JSON object, got %T", v)
	}
	return convertNumbers(obj).(map[string]any), nil
}

func convertNumbers(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			t[k] = convertNumbers(e)
		}
		return t
	case []any:
		for i, e := range t {
			t[i] = convertNumbers(e)
		}
		return t
	case json.Number:
		return jsonNumber(string(t))
	default:
		return v
	}
}

func jsonNumber(s string) any {
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return i
	}
	if u, err := strconv.ParseUint(s, 10, 64); err == nil {
		return u
	}
	if isIntegerText(s) {
		// Out of range for 64 bits: keep the exact text.
		return s
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) {
		return s
	}
	return f
}

func isIntegerText(s string) bool {
	if s != "" && s[0] == '-' {
		s = s[1:]
	}
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
