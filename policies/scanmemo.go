package policies

import (
	"slices"
	"sync"

	"github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/operators"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/interpreter"
)

// A session is decided again on every call, with a history that differs
// from the last one only by its newest entries (and the oldest dropped at
// the limit). A scan such as history.exists(h, "credential" in h.labels)
// whose predicate reads only fields of h that never change once the entry
// is recorded, and constants, finds the same per-entry result every time.
// The Set remembers those results per session and entry (by
// HistoryEntry.Seq) and evaluates the predicate only on entries it has not
// seen, combining the results as the macro would: exists (any), all
// (every), exists_one (exactly one).
//
// Like memo.go, only the untracked programs (bounds.go) remember: they are
// counted at their proven bound however little they evaluate.

// Limits of the memory of a Set.
const (
	scanSessions = 4096             // sessions remembered; beyond, one is dropped at random
	scanSpan     = 4 * boundHistory // Seq span of one history; a wider history is not remembered
)

// scanFields are the fields of a history entry a remembered predicate may
// read: those fixed once the entry is recorded. result_tags is not one of
// them: tags are added when the result arrives.
var scanFields = map[string]bool{
	"server": true, "tool": true, "name": true, "args": true, "labels": true, "decision": true, "time": true,
}

type scanKind uint8

const (
	scanExists scanKind = iota
	scanAll
	scanExistsOne
)

// Per-entry results of a predicate.
const (
	resUnknown uint8 = iota
	resTrue
	resFalse
	resError // neither: the whole scan is evaluated as written
)

// scanEval evaluates a remembered history scan. The embedded Interpretable
// is the comprehension as compiled, used whenever memory cannot answer.
type scanEval struct {
	interpreter.InterpretableV2
	id      int // index into sessionScans.scans
	kind    scanKind
	iterVar string
	accuVar string
	neutral ref.Val // the accumulator value for which the step gives the predicate
	stepID  int64
	step    interpreter.InterpretableV2 // the comprehension's loop step, set while planning
}

// scanOf returns the evaluator of e if e is a history scan whose result
// may be remembered per entry, or nil; bound lists the comprehension
// variables in scope at e.
func scanOf(e ast.Expr, bound []string) *scanEval {
	if e.Kind() != ast.ComprehensionKind {
		return nil
	}
	c := e.AsComprehension()
	r := c.IterRange()
	if r.Kind() != ast.IdentKind || r.AsIdent() != "history" || slices.Contains(bound, "history") || c.IterVar2() != "" {
		return nil
	}
	v, accu := c.IterVar(), c.AccuVar()
	isAccu := func(e ast.Expr) bool { return e.Kind() == ast.IdentKind && e.AsIdent() == accu }
	lit := func(e ast.Expr) ref.Val {
		if e.Kind() != ast.LiteralKind {
			return nil
		}
		return e.AsLiteral()
	}
	call := func(e ast.Expr, fn string, n int) []ast.Expr {
		if e.Kind() != ast.CallKind || e.AsCall().FunctionName() != fn || e.AsCall().IsMemberFunction() || len(e.AsCall().Args()) != n {
			return nil
		}
		return e.AsCall().Args()
	}
	s := &scanEval{iterVar: v, accuVar: accu, stepID: c.LoopStep().ID()}
	var preds []ast.Expr // the step's operands besides the accumulator
	switch {
	case lit(c.AccuInit()) == types.False && isAccu(c.Result()):
		// exists: cond !strictly_false(!accu), step accu || pred
		a := call(c.LoopCondition(), operators.NotStrictlyFalse, 1)
		if a == nil || call(a[0], operators.LogicalNot, 1) == nil || !isAccu(call(a[0], operators.LogicalNot, 1)[0]) {
			return nil
		}
		s.kind, s.neutral = scanExists, types.False
		preds = withoutAccu(c.LoopStep(), operators.LogicalOr, isAccu)
	case lit(c.AccuInit()) == types.True && isAccu(c.Result()):
		// all: cond !strictly_false(accu), step accu && pred
		a := call(c.LoopCondition(), operators.NotStrictlyFalse, 1)
		if a == nil || !isAccu(a[0]) {
			return nil
		}
		s.kind, s.neutral = scanAll, types.True
		preds = withoutAccu(c.LoopStep(), operators.LogicalAnd, isAccu)
	case lit(c.AccuInit()) == types.IntZero && lit(c.LoopCondition()) == types.True:
		// exists_one: step pred ? accu + 1 : accu, result accu == 1
		res := call(c.Result(), operators.Equals, 2)
		if res == nil || !isAccu(res[0]) || lit(res[1]) != types.IntOne {
			return nil
		}
		step := call(c.LoopStep(), operators.Conditional, 3)
		if step == nil || !isAccu(step[2]) {
			return nil
		}
		inc := call(step[1], operators.Add, 2)
		if inc == nil || !isAccu(inc[0]) || lit(inc[1]) != types.IntOne {
			return nil
		}
		s.kind, s.neutral = scanExistsOne, types.IntZero
		preds = step[:1]
	}
	if len(preds) == 0 {
		return nil
	}
	for _, p := range preds {
		for name := range freeVars(p) {
			if name != v {
				return nil
			}
		}
		if !readsOnlyFixedFields(p, v) {
			return nil
		}
	}
	return s
}

// withoutAccu returns the operands of the op chain e other than the
// accumulator, or nil unless the accumulator is exactly one of them.
func withoutAccu(e ast.Expr, op string, isAccu func(ast.Expr) bool) []ast.Expr {
	var out []ast.Expr
	n := 0
	for _, o := range chainOperands(e, op, nil) {
		if isAccu(o) {
			n++
			continue
		}
		out = append(out, o)
	}
	if n != 1 {
		return nil
	}
	return out
}

// readsOnlyFixedFields reports whether every free use of v in e selects
// one of scanFields from it.
func readsOnlyFixedFields(e ast.Expr, v string) bool {
	switch e.Kind() {
	case ast.IdentKind:
		return e.AsIdent() != v
	case ast.SelectKind:
		s := e.AsSelect()
		if op := s.Operand(); op.Kind() == ast.IdentKind && op.AsIdent() == v {
			return scanFields[s.FieldName()]
		}
	case ast.ComprehensionKind:
		c := e.AsComprehension()
		if !readsOnlyFixedFields(c.IterRange(), v) || !readsOnlyFixedFields(c.AccuInit(), v) {
			return false
		}
		if c.IterVar() == v || c.IterVar2() == v || c.AccuVar() == v {
			return true // shadowed below
		}
		return readsOnlyFixedFields(c.LoopCondition(), v) && readsOnlyFixedFields(c.LoopStep(), v) &&
			readsOnlyFixedFields(c.Result(), v)
	}
	for _, c := range children(e) {
		if !readsOnlyFixedFields(c, v) {
			return false
		}
	}
	return true
}

// classify turns the step's value for one entry, with the accumulator at
// its neutral value, into a per-entry result.
func (s *scanEval) classify(v ref.Val) uint8 {
	switch s.kind {
	case scanExistsOne:
		switch v {
		case types.IntOne:
			return resTrue
		case types.IntZero:
			return resFalse
		}
	default:
		if b, ok := v.(types.Bool); ok {
			if b {
				return resTrue
			}
			return resFalse
		}
	}
	return resError
}

func (s *scanEval) Exec(f *interpreter.ExecutionFrame) ref.Val {
	if s.step == nil {
		return s.InterpretableV2.Exec(f)
	}
	v, _ := f.ResolveName(stateVar)
	st, ok := v.(*evalState)
	if !ok {
		return s.InterpretableV2.Exec(f)
	}
	mem := st.scanSession()
	if mem == nil {
		return s.InterpretableV2.Exec(f)
	}
	out := s.recall(f, st, mem)
	if out == nil {
		// An entry gave an error: the macro's own evaluation says which.
		return s.InterpretableV2.Exec(f)
	}
	return out
}

func (s *scanEval) Eval(a interpreter.Activation) ref.Val {
	return s.Exec(interpreter.AsFrame(a))
}

// recall evaluates the scan from the per-entry results of mem, evaluating
// the predicate on the entries it has no result for. It returns nil if an
// entry the macro would reach gave neither true nor false.
func (s *scanEval) recall(f *interpreter.ExecutionFrame, st *evalState, mem *sessionScans) ref.Val {
	hist := st.in.History
	hv, _ := st.ResolveName("history")
	objs := hv.(historyList).objs
	lo := hist[0].Seq

	mem.mu.Lock()
	defer mem.mu.Unlock()
	res := mem.scans[s.id].window(lo, hist[len(hist)-1].Seq)
	act := entryActivation{iterVar: s.iterVar, accuVar: s.accuVar, accu: s.neutral}
	var child *interpreter.ExecutionFrame
	defer func() {
		if child != nil {
			child.Pop()
		}
	}()
	hits, errs := 0, false
	for i := range hist {
		k := hist[i].Seq - lo
		r := res[k]
		if r == resUnknown {
			if child == nil {
				child = f.Push(&act)
			}
			act.entry = &objs[i]
			r = s.classify(s.step.Exec(child))
			res[k] = r
		}
		switch r {
		case resTrue:
			if s.kind == scanExists {
				return types.True
			}
			hits++
		case resFalse:
			if s.kind == scanAll {
				return types.False
			}
		default:
			errs = true
		}
	}
	switch {
	case errs:
		return nil
	case s.kind == scanExists:
		return types.False
	case s.kind == scanAll:
		return types.True
	default:
		return types.Bool(hits == 1)
	}
}

// entryActivation binds a scan's variables for evaluating its step on one
// entry.
type entryActivation struct {
	iterVar, accuVar string
	entry            *object
	accu             ref.Val
}

func (a *entryActivation) ResolveName(name string) (any, bool) {
	switch name {
	case a.iterVar:
		return a.entry, true
	case a.accuVar:
		return a.accu, true
	}
	return nil, false
}

func (a *entryActivation) Parent() interpreter.Activation { return nil }

// scanMemory holds, per session, the per-entry results of a Set's
// remembered scans. It is safe for concurrent use.
type scanMemory struct {
	nScans   int
	mu       sync.Mutex
	sessions map[scanSessionKey]*sessionScans
}

// scanSessionKey identifies a session: a session re-created with the same
// ID starts its Seqs again.
type scanSessionKey struct {
	id      string
	started int64
	nsec    int
}

// sessionScans are the results of one session, one scanSeqs per scan, and
// which entries' fixed fields were found within the bounds (resTrue in
// bounds, see historyWithinBounds).
type sessionScans struct {
	mu     sync.Mutex
	scans  []scanSeqs
	bounds scanSeqs
}

// scanSeqs holds the results of one scan for the entries from Seq first
// on.
type scanSeqs struct {
	first int64
	res   []uint8
}

// newScanMemory returns the memory of a Set with nScans remembered scans.
// A Set without any still remembers its sessions' bounds.
func newScanMemory(nScans int) *scanMemory {
	return &scanMemory{nScans: nScans, sessions: map[scanSessionKey]*sessionScans{}}
}

// session returns the results of the session of in, made empty on first
// use.
func (m *scanMemory) session(in *Input) *sessionScans {
	k := scanSessionKey{id: in.Session.ID, started: in.Session.Started.Unix(), nsec: in.Session.Started.Nanosecond()}
	m.mu.Lock()
	defer m.mu.Unlock()
	if s, ok := m.sessions[k]; ok {
		return s
	}
	if len(m.sessions) >= scanSessions {
		for old := range m.sessions {
			delete(m.sessions, old)
			break
		}
	}
	s := &sessionScans{scans: make([]scanSeqs, m.nScans)}
	m.sessions[k] = s
	return s
}

// window returns the results for Seqs lo to hi, dropping those before lo.
func (s *scanSeqs) window(lo, hi int64) []uint8 {
	end := s.first + int64(len(s.res))
	switch {
	case len(s.res) == 0 || lo < s.first || lo >= end:
		s.first, s.res = lo, s.res[:0]
	case lo > s.first:
		s.res = s.res[:copy(s.res, s.res[lo-s.first:])]
		s.first = lo
	}
	need := int(hi - lo + 1)
	if len(s.res) > scanSpan {
		s.res = s.res[:need]
	}
	for len(s.res) < need {
		s.res = append(s.res, resUnknown)
	}
	return s.res[:need]
}

// seqsUsable reports whether the entries of h can be remembered: every
// one has a Seq, in increasing order, within scanSpan.
func seqsUsable(h []HistoryEntry) bool {
	if len(h) == 0 || h[0].Seq <= 0 || h[len(h)-1].Seq-h[0].Seq >= scanSpan {
		return false
	}
	for i := 1; i < len(h); i++ {
		if h[i].Seq <= h[i-1].Seq {
			return false
		}
	}
	return true
}
