package policies

import (
	"slices"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/operators"
	"github.com/google/cel-go/common/types"
)

// CEL's && and || are commutative: false (true) wins over an error on
// either side, and an error only comes out when no operand decides
// (CEL spec, "Logical Operators"). cel-go evaluates the operands in source
// order and stops at the first that decides, so a rule written
// `history.exists(h, ...) && "external_send" in call.labels` scans the
// whole history for every call that has no such label. cheapFirst moves
// the cheap operands of every && and || chain to the front at load time.
//
// What changes: which operands run, and so the measured cost of tracked
// rules (never above the static bound, which adds up every operand either
// way) and, when several operands fail, which failure is reported.

// reorderLogic returns checked with the operands of its && and || chains
// ordered cheapest first, or checked itself when the order is already
// that or the optimizer fails.
func reorderLogic(env *cel.Env, checked *cel.Ast) *cel.Ast {
	if !needsReorder(checked.NativeRep(), checked.NativeRep().Expr()) {
		return checked
	}
	opt, err := cel.NewStaticOptimizer(cheapFirst{})
	if err != nil {
		return checked
	}
	out, iss := opt.Optimize(env, checked)
	if iss.Err() != nil {
		return checked
	}
	return out
}

// cheapFirst is the cel.ASTOptimizer of reorderLogic.
type cheapFirst struct{}

func (cheapFirst) Optimize(ctx *cel.OptimizerContext, a *ast.AST) *ast.AST {
	reorder(ctx, a, a.Expr())
	return a
}

// reorder sorts, within e, the operands of every && and || chain by
// orderCost, stably, and rebuilds each chain that changed as a balanced
// tree, as the parser does.
func reorder(ctx *cel.OptimizerContext, a *ast.AST, e ast.Expr) {
	if op, ok := logicOp(e); ok {
		ops := chainOperands(e, op, nil)
		for _, o := range ops {
			reorder(ctx, a, o)
		}
		sorted := sortByCost(a, ops)
		if sorted != nil {
			e.SetKindCase(balance(ctx, op, sorted))
		}
		return
	}
	for _, c := range children(e) {
		reorder(ctx, a, c)
	}
}

// needsReorder reports whether reorder would change anything in e.
func needsReorder(a *ast.AST, e ast.Expr) bool {
	if op, ok := logicOp(e); ok {
		ops := chainOperands(e, op, nil)
		if sortByCost(a, ops) != nil {
			return true
		}
		return slices.ContainsFunc(ops, func(o ast.Expr) bool { return needsReorder(a, o) })
	}
	return slices.ContainsFunc(children(e), func(c ast.Expr) bool { return needsReorder(a, c) })
}

// sortByCost returns ops ordered by orderCost, or nil if they already are.
func sortByCost(a *ast.AST, ops []ast.Expr) []ast.Expr {
	type op struct {
		e    ast.Expr
		cost uint64
	}
	byCost := make([]op, len(ops))
	for i, e := range ops {
		byCost[i] = op{e, orderCost(a, e)}
	}
	if slices.IsSortedFunc(byCost, func(x, y op) int { return cmpU64(x.cost, y.cost) }) {
		return nil
	}
	slices.SortStableFunc(byCost, func(x, y op) int { return cmpU64(x.cost, y.cost) })
	out := make([]ast.Expr, len(ops))
	for i, o := range byCost {
		out[i] = o.e
	}
	return out
}

func logicOp(e ast.Expr) (string, bool) {
	if e.Kind() != ast.CallKind {
		return "", false
	}
	c := e.AsCall()
	if f := c.FunctionName(); (f == operators.LogicalAnd || f == operators.LogicalOr) && !c.IsMemberFunction() && len(c.Args()) == 2 {
		return f, true
	}
	return "", false
}

// chainOperands appends the operands of the op chain rooted at e to out,
// left to right.
func chainOperands(e ast.Expr, op string, out []ast.Expr) []ast.Expr {
	if f, ok := logicOp(e); ok && f == op {
		for _, arg := range e.AsCall().Args() {
			out = chainOperands(arg, op, out)
		}
		return out
	}
	return append(out, e)
}

// balance joins ops with op into a balanced tree, keeping their order.
func balance(ctx *cel.OptimizerContext, op string, ops []ast.Expr) ast.Expr {
	if len(ops) == 1 {
		return ops[0]
	}
	mid := len(ops) / 2
	return ctx.NewCall(op, balance(ctx, op, ops[:mid]), balance(ctx, op, ops[mid:]))
}

// children lists the direct subexpressions of e.
func children(e ast.Expr) []ast.Expr {
	switch e.Kind() {
	case ast.CallKind:
		c := e.AsCall()
		if c.IsMemberFunction() {
			return append([]ast.Expr{c.Target()}, c.Args()...)
		}
		return c.Args()
	case ast.SelectKind:
		return []ast.Expr{e.AsSelect().Operand()}
	case ast.ListKind:
		return e.AsList().Elements()
	case ast.MapKind:
		var out []ast.Expr
		for _, en := range e.AsMap().Entries() {
			out = append(out, en.AsMapEntry().Key(), en.AsMapEntry().Value())
		}
		return out
	case ast.StructKind:
		var out []ast.Expr
		for _, f := range e.AsStruct().Fields() {
			out = append(out, f.AsStructField().Value())
		}
		return out
	case ast.ComprehensionKind:
		c := e.AsComprehension()
		return []ast.Expr{c.IterRange(), c.AccuInit(), c.LoopCondition(), c.LoopStep(), c.Result()}
	}
	return nil
}

// Weights of orderCost, in rough CEL operations. They only rank operands
// against each other: a rule's cost limit is proven or enforced on the
// whole expression (bounds.go), whatever its order.
const (
	unknownSize = 1024             // elements of a list or map of unknown size (call.args)
	parseCost   = 20               // reading args: a JSON parse, once per decision
	regexCost   = 100              // matches()
	windowCost  = 50               // in_window(): parses its window on every call
	stringCost  = 10               // other string functions
	taintCost   = maxTaintWalkLen  // tainted(), taint_sources()
	historyCost = boundHistory + 1 // sequence(), countSince(): as sizeHints charges them
)

// orderCost estimates what evaluating e costs, for ordering only: sizes
// as in bounds.go, comprehensions as their range times their body.
func orderCost(a *ast.AST, e ast.Expr) uint64 {
	sum := func(es []ast.Expr) uint64 {
		var n uint64
		for _, c := range es {
			n = addSat(n, orderCost(a, c))
		}
		return n
	}
	switch e.Kind() {
	case ast.SelectKind:
		n := addSat(1, orderCost(a, e.AsSelect().Operand()))
		if e.AsSelect().FieldName() == "args" {
			n = addSat(n, parseCost)
		}
		return n
	case ast.ComprehensionKind:
		c := e.AsComprehension()
		body := addSat(orderCost(a, c.LoopCondition()), orderCost(a, c.LoopStep()))
		return addSat(addSat(orderCost(a, c.IterRange()), orderCost(a, c.AccuInit())),
			addSat(mulSat(sizeOf(a, c.IterRange()), body), orderCost(a, c.Result())))
	case ast.CallKind:
		c := e.AsCall()
		n := addSat(1, sum(children(e)))
		switch c.FunctionName() {
		case operators.Conditional:
			args := c.Args()
			return addSat(1, addSat(orderCost(a, args[0]), max(orderCost(a, args[1]), orderCost(a, args[2]))))
		case operators.In:
			if args := c.Args(); len(args) == 2 && a.GetType(args[1].ID()).Kind() == types.ListKind {
				n = addSat(n, sizeOf(a, args[1]))
			}
		case "sequence", "countSince":
			n = addSat(n, historyCost)
		case "matches":
			n = addSat(n, regexCost)
		case fnTainted, fnTaintSources:
			n = addSat(n, taintCost)
		case "in_window":
			n = addSat(n, windowCost)
		case "contains", "startsWith", "endsWith", "glob", "url_host", "email_domain",
			"ip_in_cidr", "is_private_ip", "lowerAscii", "upperAscii":
			n = addSat(n, stringCost)
		}
		return n
	case ast.ListKind, ast.MapKind, ast.StructKind:
		return addSat(1, sum(children(e)))
	}
	return 1
}

// sizeOf estimates how many elements the list or map e holds.
func sizeOf(a *ast.AST, e ast.Expr) uint64 {
	switch e.Kind() {
	case ast.ListKind:
		return uint64(e.AsList().Size())
	case ast.MapKind:
		return uint64(e.AsMap().Size())
	}
	t := a.GetType(e.ID())
	switch {
	case t.IsExactType(historyListType):
		return boundHistory
	case t.IsExactType(types.NewListType(flagType)):
		return boundFlags
	case t.Kind() != types.ListKind && t.Kind() != types.MapKind:
		return unknownSize
	}
	for _, p := range t.Parameters() {
		if p.Kind() == types.DynKind || p.Kind() == types.AnyKind {
			return unknownSize
		}
	}
	return boundList
}

func addSat(x, y uint64) uint64 {
	if x+y < x {
		return ^uint64(0)
	}
	return x + y
}

func mulSat(x, y uint64) uint64 {
	if x != 0 && y > ^uint64(0)/x {
		return ^uint64(0)
	}
	return x * y
}
