package policies

import (
	"github.com/google/cel-go/checker"
	"github.com/google/cel-go/common/types"
)

// CEL's runtime cost tracking watches every node of an expression and,
// inside a comprehension, searches a stack that grows with each iteration:
// it made a 50-rule pack about four times slower. A rule whose cost is
// bounded for every input within the sizes below is proven within its
// limit at load, and runs without tracking when the input is within those
// sizes (checked once per decision, see inputBounds). Any other rule, or
// any larger input, runs tracked as before, so every rule still has a cost
// limit and every call a budget.
const (
	boundHistory = 256  // entries of history (the sessions' default history limit)
	boundFlags   = 64   // detector flags
	boundList    = 32   // items of a typed list or map: labels, result_tags, scope, session.labels
	boundString  = 4096 // bytes of a typed string: names, decisions, labels, flag details
)

// sizeHints is the cost estimator that assumes those sizes for values of
// toolgate's typed variables; values it cannot bound (call.args, agent
// claims, anything dyn) stay unknown, which makes the estimate unbounded.
type sizeHints struct{}

func (sizeHints) EstimateSize(n checker.AstNode) *checker.SizeEstimate {
	path := n.Path()
	if len(path) == 0 {
		return nil
	}
	switch path[0] {
	case "call", "session", "history", "flags":
	default:
		return nil
	}
	for _, p := range path[1:] {
		if p == "args" {
			return nil
		}
	}
	t := n.Type()
	var max uint64
	switch {
	case t.IsExactType(historyListType):
		max = boundHistory
	case t.IsExactType(types.NewListType(flagType)):
		max = boundFlags
	case t.Kind() == types.ListKind || t.Kind() == types.MapKind:
		max = boundList
	case t.Kind() == types.StringKind:
		max = boundString
	default:
		return nil
	}
	return &checker.SizeEstimate{Min: 0, Max: max}
}

// EstimateCallCost charges the history functions what their runtime
// trackers charge (costTrackers): one unit per entry, plus one.
func (sizeHints) EstimateCallCost(_, overloadID string, _ *checker.AstNode, _ []checker.AstNode) *checker.CallEstimate {
	switch overloadID {
	case ovSequence, ovCountSinceDur, ovCountSinceDurD, ovCountSinceTime, ovCountSinceTimeD:
		return &checker.CallEstimate{CostEstimate: checker.CostEstimate{Min: 1, Max: boundHistory + 1}}
	}
	return nil
}

// withinBounds reports whether every value sizeHints bounds is within its
// bound in this input.
func withinBounds(in *Input) bool {
	if !callWithinBounds(in) {
		return false
	}
	for i := range in.History {
		if !entryWithinBounds(&in.History[i]) || !tagsWithinBounds(&in.History[i]) {
			return false
		}
	}
	return true
}

// callWithinBounds is withinBounds but for the history entries' fields,
// which sessionScans.historyWithinBounds checks with what it remembers.
func callWithinBounds(in *Input) bool {
	if len(in.History) > boundHistory || len(in.Flags) > boundFlags {
		return false
	}
	c, s := &in.Call, &in.Session
	if !strs(c.Labels) || !strs(s.Scope) || len(s.Labels) > boundList ||
		!str(c.Server, c.Tool, c.Name, c.Method, s.ID, s.Agent, s.Profile) {
		return false
	}
	for k, v := range s.Labels {
		if !str(k, v) {
			return false
		}
	}
	for i := range in.Flags {
		if !str(in.Flags[i].Kind, in.Flags[i].Detail) {
			return false
		}
	}
	return true
}

// entryWithinBounds reports whether the fields of h fixed once it is
// recorded are within their bounds.
func entryWithinBounds(h *HistoryEntry) bool {
	return max(len(h.Server), len(h.Tool), len(h.Name), len(h.Decision)) <= boundString && strs(h.Labels)
}

// tagsWithinBounds reports whether h's result tags, which may be added
// after h is recorded, are within their bounds.
func tagsWithinBounds(h *HistoryEntry) bool {
	return len(h.ResultTags) == 0 || strs(h.ResultTags)
}

// historyWithinBounds reports whether the entries of hist, a history
// seqsUsable accepts, are within their bounds. Fixed fields are checked
// once per entry of the session (by Seq) and remembered; result tags,
// which may still change, every time.
func (m *sessionScans) historyWithinBounds(hist []HistoryEntry) bool {
	lo := hist[0].Seq
	m.mu.Lock()
	defer m.mu.Unlock()
	proven := m.bounds.window(lo, hist[len(hist)-1].Seq)
	for i := range hist {
		h := &hist[i]
		if !tagsWithinBounds(h) {
			return false
		}
		if k := h.Seq - lo; proven[k] != resTrue {
			if !entryWithinBounds(h) {
				return false
			}
			proven[k] = resTrue
		}
	}
	return true
}

func strs(l []string) bool {
	if len(l) > boundList {
		return false
	}
	for _, s := range l {
		if len(s) > boundString {
			return false
		}
	}
	return true
}

func str(ss ...string) bool {
	for _, s := range ss {
		if len(s) > boundString {
			return false
		}
	}
	return true
}
