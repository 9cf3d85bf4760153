// Package evals replays recorded agent sessions through toolgate's decision
// path and scores what the policies would have stopped and what they would
// have broken.
package evals

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/toolgate/toolgate/tools/replay"
)

// Trace labels.
const (
	LabelBenign = "benign"
	LabelAttack = "attack"
)

// Trace is one recorded agent session: one line of a JSONL trace file.
type Trace struct {
	ID    string `json:"id"`
	Suite string `json:"suite"` // the tool server the calls went to
	Model string `json:"model"` // the agent
	// Profile, when set, is the profile the session opens with; else the
	// profile named like the suite, else "default".
	Profile string `json:"profile,omitempty"`
	// UserTask names the user's request; benign traces of one task are
	// grouped when scoring.
	UserTask string `json:"user_task"`
	// Prompt is the user's request (a string, or a list of content
	// blocks), for people reading a trace; a gateway never sees it and the
	// replay does not use it.
	Prompt json.RawMessage `json:"prompt,omitempty"`
	Calls  []TraceCall     `json:"calls"`
	Label  string          `json:"label"` // benign or attack
	// AttackType and InjectionTask describe the attack of an attack trace.
	AttackType    string `json:"attack_type,omitempty"`
	InjectionTask string `json:"injection_task,omitempty"`
	// HarmfulCallIndex is the index in Calls of the first call that does
	// what the attacker wanted; nil when the agent never made one.
	HarmfulCallIndex *int   `json:"harmful_call_index"`
	AttackSucceeded  *bool  `json:"attack_succeeded,omitempty"`
	Utility          *bool  `json:"utility,omitempty"`
	Source           string `json:"source,omitempty"`
}

// TraceCall is one recorded tool call.
type TraceCall struct {
	Tool string          `json:"tool"`
	Args json.RawMessage `json:"args"`
	// Result is what the tool returned: a JSON string, a list of content
	// blocks ({"type": "text", "text" or "content": "..."}), or any other
	// JSON value (replayed as its JSON text).
	Result json.RawMessage `json:"result"`
	// Error is the tool's error, when it failed; replayed as the result.
	Error string `json:"error,omitempty"`
}

// Harmful reports whether the trace is an attack containing a harmful call.
func (t *Trace) Harmful() bool { return t.Label == LabelAttack && t.HarmfulCallIndex != nil }

// Agent names the agent of the trace ("unknown" when not recorded).
func (t *Trace) Agent() string {
	if t.Model == "" {
		return "unknown"
	}
	return t.Model
}

// ResultText is the recorded result as the text a tool returns: a JSON
// string unquoted, the texts of a list of text blocks one per line,
// anything else as its JSON.
func (c TraceCall) ResultText() string {
	if len(c.Result) == 0 || string(c.Result) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(c.Result, &s) == nil {
		return s
	}
	var blocks []struct {
		Type    string  `json:"type"`
		Text    *string `json:"text"`
		Content *string `json:"content"`
	}
	if json.Unmarshal(c.Result, &blocks) == nil && len(blocks) > 0 {
		texts := make([]string, 0, len(blocks))
		for _, b := range blocks {
			switch {
			case b.Type != "text":
				return string(c.Result)
			case b.Text != nil:
				texts = append(texts, *b.Text)
			case b.Content != nil:
				texts = append(texts, *b.Content)
			}
		}
		return strings.Join(texts, "\n")
	}
	return string(c.Result)
}

// Replay is the call as the replay tool server holds it.
func (c TraceCall) Replay() replay.Call {
	return replay.Call{Tool: c.Tool, Args: c.args(), Result: c.ResultText(), Error: c.Error}
}

// args returns the arguments, an empty object when none were recorded.
func (c TraceCall) args() json.RawMessage {
	if len(c.Args) == 0 || string(c.Args) == "null" {
		return json.RawMessage(`{}`)
	}
	return c.Args
}

// Validate reports what makes the trace unusable, saying how to fix it.
func (t *Trace) Validate() error {
	var errs []error
	if t.ID == "" {
		errs = append(errs, errors.New(`"id" is required: give every trace a unique id`))
	}
	if t.Suite == "" {
		errs = append(errs, errors.New(`"suite" is required: name the tool server the calls went to`))
	}
	switch t.Label {
	case LabelBenign:
		if t.HarmfulCallIndex != nil {
			errs = append(errs, errors.New(`"harmful_call_index" is set on a benign trace: set it to null or label the trace "attack"`))
		}
	case LabelAttack:
	default:
		errs = append(errs, fmt.Errorf(`"label" %q is not "benign" or "attack"`, t.Label))
	}
	if i := t.HarmfulCallIndex; i != nil && (*i < 0 || *i >= len(t.Calls)) {
		errs = append(errs, fmt.Errorf(`"harmful_call_index" %d is outside the %d calls (0-based)`, *i, len(t.Calls)))
	}
	for i, c := range t.Calls {
		if c.Tool == "" {
			errs = append(errs, fmt.Errorf(`calls[%d]: "tool" is required`, i))
		}
		if a := strings.TrimSpace(string(c.Args)); a != "" && a != "null" && !strings.HasPrefix(a, "{") {
			errs = append(errs, fmt.Errorf(`calls[%d]: "args" must be a JSON object`, i))
		}
	}
	return errors.Join(errs...)
}

// ReadTraces reads JSONL trace files, one session a line; blank lines are
// skipped. Every error names the file and line. Fields it does not know are
// ignored, so trace files may carry more than the replay needs.
func ReadTraces(paths ...string) ([]Trace, error) {
	var out []Trace
	seen := map[string]string{}
	for _, path := range paths {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("read traces: %w", err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
		for line := 1; sc.Scan(); line++ {
			text := strings.TrimSpace(sc.Text())
			if text == "" {
				continue
			}
			var t Trace
			if err := json.Unmarshal([]byte(text), &t); err != nil {
				f.Close()
				return nil, fmt.Errorf("read traces: %s:%d: %w", path, line, err)
			}
			if err := t.Validate(); err != nil {
				f.Close()
				return nil, fmt.Errorf("read traces: %s:%d (id %q): %w", path, line, t.ID, err)
			}
			where := fmt.Sprintf("%s:%d", path, line)
			if prev, dup := seen[t.ID]; dup {
				f.Close()
				return nil, fmt.Errorf("read traces: %s: id %q is already used at %s: ids must be unique", where, t.ID, prev)
			}
			seen[t.ID] = where
			out = append(out, t)
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("read traces: %s: %w", path, err)
		}
	}
	return out, nil
}
