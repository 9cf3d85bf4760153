package policies

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/interpreter"
)

// Decision is the outcome of one call against a policy set.
type Decision struct {
	// Action is what to do with the call: the strictest action of the
	// enforced rules that matched, or allow when none did.
	Action Action `json:"action"`
	// Rule is the id of the rule that decided; empty when no rule did
	// (default allow, out of scope, bad input).
	Rule string `json:"rule,omitempty"`
	// Message is what the agent is told. It never holds an expression.
	Message  string   `json:"message,omitempty"`
	Severity Severity `json:"severity,omitempty"`
	// Matched lists the enforced rules whose condition held, in order.
	Matched []RuleResult `json:"matched,omitempty"`
	// WouldHave lists the shadow rules whose condition held: what they
	// would have done had they been enforced.
	WouldHave []RuleResult `json:"would_have,omitempty"`
	// Narrow is what to remove from the session's scope: the union of
	// all enforced narrow rules that matched. Apply it whenever it is not
	// empty, even if a stricter action decided this call.
	Narrow Narrowing `json:"narrow,omitzero"`
	// Errors lists rules that could not be evaluated. An error in an
	// enforced rule denies the call; one in a shadow rule is only
	// reported.
	Errors []RuleError `json:"errors,omitempty"`
	// Cost is the total CEL cost spent: measured for rules evaluated with
	// cost tracking, the proven upper bound for rules that did not need it.
	Cost uint64 `json:"cost"`
	// Elapsed is the evaluation time.
	Elapsed time.Duration `json:"elapsed"`
	// Version is the version of the policy set that decided.
	Version string `json:"version,omitempty"`
}

// RuleResult is one rule whose condition held.
type RuleResult struct {
	ID       string   `json:"id"`
	Action   Action   `json:"action"`
	Mode     Mode     `json:"mode"`
	Severity Severity `json:"severity"`
	Message  string   `json:"message,omitempty"`
}

// ErrorKind says why a rule could not be evaluated.
type ErrorKind string

// Error kinds.
const (
	ErrCostLimit ErrorKind = "cost_limit" // the rule went over Options.CostLimit
	ErrBudget    ErrorKind = "budget"     // the decision went over Options.CallBudget
	ErrEval      ErrorKind = "eval"       // the expression failed, e.g. a missing key
	ErrInput     ErrorKind = "input"      // the Input itself is unusable
)

// RuleError is a rule that could not be evaluated. Detail is for
// operators' logs; it may quote values of the call but not the
// expression.
type RuleError struct {
	Rule   string    `json:"rule,omitempty"`
	Mode   Mode      `json:"mode,omitempty"`
	Kind   ErrorKind `json:"kind"`
	Detail string    `json:"detail"`
}

// Decide evaluates in against every rule of the set. It does no I/O and
// does not change in.
//
// Combination: a tool outside the session's scope (in.OutOfScope) is
// refused before any rule runs. Otherwise every rule whose match filter
// passes has its condition evaluated; of the enforced rules whose
// condition held, the strictest action wins (revoke > deny >
// require_approval > narrow > allow), the first such rule in load order
// giving the message. No matching rule means allow. A rule that cannot be
// evaluated counts as a deny. A narrow decision whose removals cover the
// call itself becomes a deny.
func (s *Set) Decide(in *Input) Decision {
	start := time.Now()
	d := s.decide(in)
	d.Version = s.version
	d.Elapsed = time.Since(start)
	return d
}

func (s *Set) decide(in *Input) Decision {
	d := Decision{Action: ActionAllow}
	if in.Now.IsZero() {
		d.Action = ActionDeny
		d.Message = "The call could not be checked against policy."
		d.Errors = []RuleError{{Kind: ErrInput, Detail: errNoNow.Error()}}
		return d
	}
	if in.OutOfScope != "" {
		d.Action = ActionDeny
		if in.OutOfScope == ActionRevoke {
			d.Action = ActionRevoke
		}
		d.Message = fmt.Sprintf("Tool %s is outside this session's scope.", in.Call.Name)
		return d
	}
	st := newEvalState(in, s.adapter, s.nSlots, s.scans)
	defer st.release()
	var decider *compiledRule
	// Matches are gathered on the stack and copied out once, at their
	// final length, rather than grown one append at a time.
	var matchedBuf, wouldHaveBuf [8]RuleResult
	matched, wouldHave := matchedBuf[:0], wouldHaveBuf[:0]
	for _, r := range s.rules {
		if !r.Match.matches(&in.Call) {
			continue
		}
		held := true
		if r.prg != nil {
			var out ref.Val
			var err error
			if r.fast != nil && d.Cost+r.bound <= s.opts.CallBudget && st.withinBounds() {
				// Proven within its limit for this input (bounds.go):
				// counted at its bound, so the budget still holds.
				out, _, err = r.fast.Eval(st)
				d.Cost += r.bound
			} else {
				var det *cel.EvalDetails
				out, det, err = r.prg.Eval(st)
				if det != nil && det.ActualCost() != nil {
					d.Cost += *det.ActualCost()
				}
			}
			if err == nil && d.Cost > s.opts.CallBudget {
				err = errBudget
			}
			if err != nil {
				re := RuleError{Rule: r.ID, Mode: r.Mode, Kind: errorKind(err), Detail: err.Error()}
				d.Errors = append(d.Errors, re)
				if r.Mode == ModeEnforce || re.Kind == ErrBudget {
					if ActionDeny.Stricter(d.Action) {
						d.Action, d.Rule, d.Severity = ActionDeny, r.ID, r.Severity
						d.Message = fmt.Sprintf("Policy rule %q could not be evaluated, so the call is denied.", r.ID)
						decider = nil
					}
				}
				if re.Kind == ErrBudget {
					break
				}
				continue
			}
			b, ok := out.(types.Bool)
			held = ok && bool(b)
		}
		if !held {
			continue
		}
		res := RuleResult{ID: r.ID, Action: r.Action, Mode: r.Mode, Severity: r.Severity, Message: r.Message}
		if r.Mode == ModeShadow {
			wouldHave = append(wouldHave, res)
			continue
		}
		matched = append(matched, res)
		if r.Action == ActionNarrow {
			d.Narrow.add(r.Narrow)
		}
		if r.Action.Stricter(d.Action) {
			d.Action, d.Rule, d.Message, d.Severity = r.Action, r.ID, r.Message, r.Severity
			decider = r
		}
	}
	if len(matched) > 0 {
		d.Matched = slices.Clone(matched)
	}
	if len(wouldHave) > 0 {
		d.WouldHave = slices.Clone(wouldHave)
	}
	if d.Action == ActionNarrow && d.Narrow.Covers(in.Call.Name, in.Call.Labels) {
		// The call would use what this very decision takes away.
		d.Action = ActionDeny
		if decider != nil {
			d.Message = decider.Message
		}
	}
	return d
}

var errBudget = errors.New("policy evaluation budget for one call exceeded")

func errorKind(err error) ErrorKind {
	if errors.Is(err, errBudget) {
		return ErrBudget
	}
	var ce interpreter.EvalCancelledError
	if errors.As(err, &ce) && ce.Cause == interpreter.CostLimitExceeded {
		return ErrCostLimit
	}
	return ErrEval
}
