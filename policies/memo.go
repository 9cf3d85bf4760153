package policies

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/interpreter"
)

// Rules of a pack repeat the same history scans: five rules may each ask
// history.exists(h, "credential" in h.labels). Such a comprehension reads
// only variables that are fixed for the whole decision, so its value is
// too. Each distinct one gets a slot, shared across the rules of a Set,
// and is evaluated once per decision; the other rules read the slot.
//
// Only the untracked programs (bounds.go) share slots: their cost is
// counted at the proven bound whether or not a slot was already filled,
// while a tracked program measures, and is limited by, the work it does.

// decisionVars are the variables that are the same for every rule of one
// decision.
var decisionVars = map[string]bool{
	"call": true, "session": true, "history": true, "agent": true, "now": true, "flags": true, taintVar: true,
}

// stateVar resolves, in the activation of every rule, to the decision's
// *evalState. It is not a CEL identifier, so no expression can name it.
const stateVar = "toolgate:state"

// memoSlots numbers the distinct shareable comprehensions of a Set, and
// its distinct remembered history scans (scanmemo.go).
type memoSlots struct {
	byKey map[string]int
	scans map[string]int
}

// decorator returns the program option that makes the shareable
// comprehensions of checked read and fill their slots, and its history
// scans remember their per-entry results, or nil if checked has neither.
func (m *memoSlots) decorator(checked *cel.Ast) cel.ProgramOption {
	a := checked.NativeRep()
	slots := map[int64]int{}
	m.find(a, a.Expr(), nil, slots)
	scans := map[int64]*scanEval{}
	m.findScans(a, a.Expr(), nil, scans)
	if len(slots) == 0 && len(scans) == 0 {
		return nil
	}
	steps := map[int64]*scanEval{}
	for _, s := range scans {
		steps[s.stepID] = s
	}
	return cel.CustomDecoratorV2(func(i interpreter.InterpretableV2) (interpreter.InterpretableV2, error) {
		if s, ok := steps[i.ID()]; ok {
			// The loop step is planned before its comprehension.
			s.step = i
		}
		if _, attr := i.(interpreter.InterpretableAttribute); attr {
			// An attribute built over the comprehension (to select from
			// its result) shares its ID; the comprehension itself is
			// wrapped already.
			return i, nil
		}
		out := i
		if s, ok := scans[i.ID()]; ok {
			delete(scans, i.ID()) // wrap once
			s.InterpretableV2 = out
			out = s
		}
		if slot, ok := slots[i.ID()]; ok {
			delete(slots, i.ID())
			out = &memoEval{InterpretableV2: out, slot: slot}
		}
		return out, nil
	})
}

// findScans records in scans the history scans under e whose per-entry
// results may be remembered (scanOf); bound lists the comprehension
// variables in scope at e.
func (m *memoSlots) findScans(a *ast.AST, e ast.Expr, bound []string, scans map[int64]*scanEval) {
	walkComprehensions(e, bound, func(e ast.Expr, bound []string) bool {
		if s := scanOf(e, bound); s != nil {
			if m.scans == nil {
				m.scans = map[string]int{}
			}
			key := canonical(a, e)
			id, ok := m.scans[key]
			if !ok {
				id = len(m.scans)
				m.scans[key] = id
			}
			s.id = id
			scans[e.ID()] = s
		}
		return false // scans inside it are remembered too
	})
}

// find records in slots the outermost comprehensions under e that read
// only decision variables; bound lists the comprehension variables in
// scope at e.
func (m *memoSlots) find(a *ast.AST, e ast.Expr, bound []string, slots map[int64]int) {
	walkComprehensions(e, bound, func(e ast.Expr, bound []string) bool {
		for name := range freeVars(e) {
			if !decisionVars[name] || slices.Contains(bound, name) {
				return false
			}
		}
		key := canonical(a, e)
		slot, ok := m.byKey[key]
		if !ok {
			slot = len(m.byKey)
			m.byKey[key] = slot
		}
		slots[e.ID()] = slot
		return true
	})
}

// walkComprehensions calls visit on every comprehension under e, outermost
// first, with the comprehension variables in scope at it; when visit
// returns true, nothing inside that comprehension is visited.
func walkComprehensions(e ast.Expr, bound []string, visit func(e ast.Expr, bound []string) bool) {
	if e.Kind() != ast.ComprehensionKind {
		for _, c := range children(e) {
			walkComprehensions(c, bound, visit)
		}
		return
	}
	if visit(e, bound) {
		return
	}
	c := e.AsComprehension()
	walkComprehensions(c.IterRange(), bound, visit)
	walkComprehensions(c.AccuInit(), bound, visit)
	inner := append(bound[:len(bound):len(bound)], c.IterVar(), c.IterVar2(), c.AccuVar())
	walkComprehensions(c.LoopCondition(), inner, visit)
	walkComprehensions(c.LoopStep(), inner, visit)
	walkComprehensions(c.Result(), inner, visit)
}

// freeVars returns the identifiers e reads that it does not bind itself.
func freeVars(e ast.Expr) map[string]bool {
	out := map[string]bool{}
	var walk func(e ast.Expr, bound []string)
	walk = func(e ast.Expr, bound []string) {
		switch e.Kind() {
		case ast.IdentKind:
			if !slices.Contains(bound, e.AsIdent()) {
				out[e.AsIdent()] = true
			}
		case ast.ComprehensionKind:
			c := e.AsComprehension()
			walk(c.IterRange(), bound)
			walk(c.AccuInit(), bound)
			inner := append(bound[:len(bound):len(bound)], c.IterVar(), c.IterVar2(), c.AccuVar())
			walk(c.LoopCondition(), inner)
			walk(c.LoopStep(), inner)
			walk(c.Result(), inner)
		default:
			for _, c := range children(e) {
				walk(c, bound)
			}
		}
	}
	walk(e, nil)
	return out
}

// canonical is a text that two checked expressions of one environment
// share only if they evaluate alike: the tree with every literal's type,
// every call's overloads and every bound variable's name.
func canonical(a *ast.AST, e ast.Expr) string {
	var b strings.Builder
	writeCanonical(&b, a, e)
	return b.String()
}

func writeCanonical(b *strings.Builder, a *ast.AST, e ast.Expr) {
	list := func(es ...ast.Expr) {
		for _, c := range es {
			b.WriteByte(' ')
			writeCanonical(b, a, c)
		}
	}
	b.WriteByte('(')
	switch e.Kind() {
	case ast.LiteralKind:
		v := e.AsLiteral()
		fmt.Fprintf(b, "lit %s %s", v.Type().TypeName(), strconv.Quote(fmt.Sprint(v.Value())))
	case ast.IdentKind:
		fmt.Fprintf(b, "id %q", e.AsIdent())
	case ast.SelectKind:
		s := e.AsSelect()
		fmt.Fprintf(b, "sel %q %t", s.FieldName(), s.IsTestOnly())
		list(s.Operand())
	case ast.CallKind:
		c := e.AsCall()
		fmt.Fprintf(b, "call %q %q %t", c.FunctionName(), a.GetOverloadIDs(e.ID()), c.IsMemberFunction())
		list(children(e)...)
	case ast.ListKind:
		fmt.Fprintf(b, "list %v", e.AsList().OptionalIndices())
		list(e.AsList().Elements()...)
	case ast.MapKind:
		b.WriteString("map")
		for _, en := range e.AsMap().Entries() {
			fmt.Fprintf(b, " %t", en.AsMapEntry().IsOptional())
			list(en.AsMapEntry().Key(), en.AsMapEntry().Value())
		}
	case ast.StructKind:
		fmt.Fprintf(b, "struct %q", e.AsStruct().TypeName())
		for _, f := range e.AsStruct().Fields() {
			fmt.Fprintf(b, " %q %t", f.AsStructField().Name(), f.AsStructField().IsOptional())
			list(f.AsStructField().Value())
		}
	case ast.ComprehensionKind:
		c := e.AsComprehension()
		fmt.Fprintf(b, "fold %q %q %q", c.IterVar(), c.IterVar2(), c.AccuVar())
		list(children(e)...)
	default:
		fmt.Fprintf(b, "kind %d", e.Kind())
	}
	b.WriteByte(')')
}

// memoEval evaluates a shareable comprehension once per decision.
type memoEval struct {
	interpreter.InterpretableV2
	slot int
}

func (m *memoEval) Exec(f *interpreter.ExecutionFrame) ref.Val {
	v, _ := f.ResolveName(stateVar)
	st, ok := v.(*evalState)
	if !ok || m.slot >= st.nSlots {
		return m.InterpretableV2.Exec(f)
	}
	if len(st.slots) != st.nSlots {
		// A pooled state keeps its slots, all nil (release).
		st.slots = slices.Grow(st.slots[:0], st.nSlots)[:st.nSlots]
	}
	if out := st.slots[m.slot]; out != nil {
		return out
	}
	out := m.InterpretableV2.Exec(f)
	st.slots[m.slot] = out
	return out
}

func (m *memoEval) Eval(a interpreter.Activation) ref.Val {
	return m.Exec(interpreter.AsFrame(a))
}
