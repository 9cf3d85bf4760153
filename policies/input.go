package policies

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
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
	if json.Valid(raw) {
		if m, ok := parseValidArgs(raw); ok {
			return m, nil
		}
	}
	// Invalid input, or a value the parser below leaves to encoding/json:
	// the decoder gives the error or the value.
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

// parseValidArgs parses raw, which json.Valid accepted, as ParseArgs does
// with encoding/json, in fewer allocations: the text is copied once and
// keys and strings without escapes are slices of that copy. ok is false
// if raw is not an object; a string with escapes or non-ASCII bytes that
// are not valid UTF-8 is decoded by encoding/json.
func parseValidArgs(raw []byte) (m map[string]any, ok bool) {
	p := argParser{s: string(raw)}
	p.space()
	if p.i >= len(p.s) || p.s[p.i] != '{' {
		return nil, false
	}
	v, ok := p.value()
	if !ok {
		return nil, false
	}
	m, ok = v.(map[string]any)
	return m, ok
}

// argParser reads JSON text that json.Valid accepted; it checks only
// what it relies on, and reports anything else as not ok.
type argParser struct {
	s string
	i int
}

func (p *argParser) space() {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *argParser) value() (any, bool) {
	if p.i >= len(p.s) {
		return nil, false
	}
	switch c := p.s[p.i]; {
	case c == '{':
		p.i++
		m := map[string]any{}
		p.space()
		if p.i < len(p.s) && p.s[p.i] == '}' {
			p.i++
			return m, true
		}
		for {
			p.space()
			k, ok := p.str()
			if !ok {
				return nil, false
			}
			p.space()
			if p.i >= len(p.s) || p.s[p.i] != ':' {
				return nil, false
			}
			p.i++
			p.space()
			v, ok := p.value()
			if !ok {
				return nil, false
			}
			m[k] = v
			p.space()
			if p.i >= len(p.s) {
				return nil, false
			}
			p.i++
			switch p.s[p.i-1] {
			case ',':
			case '}':
				return m, true
			default:
				return nil, false
			}
		}
	case c == '[':
		p.i++
		a := make([]any, 0)
		p.space()
		if p.i < len(p.s) && p.s[p.i] == ']' {
			p.i++
			return a, true
		}
		for {
			p.space()
			v, ok := p.value()
			if !ok {
				return nil, false
			}
			a = append(a, v)
			p.space()
			if p.i >= len(p.s) {
				return nil, false
			}
			p.i++
			switch p.s[p.i-1] {
			case ',':
			case ']':
				return a, true
			default:
				return nil, false
			}
		}
	case c == '"':
		return p.str()
	case c == 't' && strings.HasPrefix(p.s[p.i:], "true"):
		p.i += 4
		return true, true
	case c == 'f' && strings.HasPrefix(p.s[p.i:], "false"):
		p.i += 5
		return false, true
	case c == 'n' && strings.HasPrefix(p.s[p.i:], "null"):
		p.i += 4
		return nil, true
	case c == '-' || c >= '0' && c <= '9':
		j := p.i
		for p.i < len(p.s) && strings.IndexByte("+-.eE0123456789", p.s[p.i]) >= 0 {
			p.i++
		}
		return jsonNumber(p.s[j:p.i]), true
	}
	return nil, false
}

// str reads a string. One that holds escapes or invalid UTF-8 goes
// through encoding/json, which unescapes it and replaces bad bytes.
func (p *argParser) str() (string, bool) {
	if p.i >= len(p.s) || p.s[p.i] != '"' {
		return "", false
	}
	j := p.i + 1
	k := j
	escaped, high := false, false
	for ; k < len(p.s) && p.s[k] != '"'; k++ {
		switch c := p.s[k]; {
		case c == '\\':
			escaped = true
			k++ // the escaped byte may be a quote
		case c >= utf8.RuneSelf:
			high = true
		}
	}
	if k >= len(p.s) {
		return "", false
	}
	p.i = k + 1
	if body := p.s[j:k]; !escaped && (!high || utf8.ValidString(body)) {
		return body, true
	}
	var out string
	if json.Unmarshal([]byte(p.s[j-1:k+1]), &out) != nil {
		return "", false
	}
	return out, true
}
