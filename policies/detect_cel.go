package policies

import (
	"fmt"
	"reflect"
	"slices"
	"strconv"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common"
	"github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"
)

// tainted(x) and taint_sources(x) read the session's fingerprints, which a
// plain CEL function cannot reach (functions see only their arguments).
// Two macros therefore rewrite them at compile time to two-argument
// functions whose first argument is the hidden variable _taint, bound to
// Input.Taint.
const (
	taintVar        = "_taint"
	fnTainted       = "_tainted"
	fnTaintSources  = "_taint_sources"
	maxTaintWalkLen = 4096 // values inspected per call of tainted(); the rest is ignored
)

var taintType = types.NewOpaqueType("toolgate.Taint")

// taintVal is the CEL value of _taint.
type taintVal struct{ set *TaintSet }

func (t taintVal) ConvertToNative(reflect.Type) (any, error) {
	return nil, fmt.Errorf("toolgate: taint cannot be converted")
}
func (t taintVal) ConvertToType(typ ref.Type) ref.Val {
	if typ == types.TypeType {
		return taintType
	}
	return types.NewErr("type conversion error from 'toolgate.Taint' to '%s'", typ.TypeName())
}
func (t taintVal) Equal(o ref.Val) ref.Val { return types.Bool(o == ref.Val(t)) }
func (t taintVal) Type() ref.Type          { return taintType }
func (t taintVal) Value() any              { return t.set }

func taintEnvOptions() []cel.EnvOption {
	rewrite := func(fn string) cel.MacroFactory {
		return func(eh cel.MacroExprFactory, _ ast.Expr, args []ast.Expr) (ast.Expr, *common.Error) {
			return eh.NewCall(fn, eh.NewIdent(taintVar), args[0]), nil
		}
	}
	return []cel.EnvOption{
		cel.Variable(taintVar, taintType),
		cel.Macros(
			cel.GlobalMacro("tainted", 1, rewrite(fnTainted)),
			cel.GlobalMacro("taint_sources", 1, rewrite(fnTaintSources)),
		),
		cel.Function(fnTainted,
			cel.Overload("toolgate_tainted_dyn", []*types.Type{taintType, types.DynType}, types.BoolType,
				cel.BinaryBinding(func(t, v ref.Val) ref.Val {
					found := false
					walkTaint(t, v, func(fp fingerprint) bool { found = true; return false })
					return types.Bool(found)
				}))),
		cel.Function(fnTaintSources,
			cel.Overload("toolgate_taint_sources_dyn", []*types.Type{taintType, types.DynType}, stringListType,
				cel.BinaryBinding(func(t, v ref.Val) ref.Val {
					var cats uint8
					walkTaint(t, v, func(fp fingerprint) bool { cats |= fp.cats; return true })
					return types.NewStringList(types.DefaultTypeAdapter, catNames(cats))
				}))),
	}
}

// walkTaint calls f for the fingerprints carried by the strings and numbers
// inside v (lists and map values, recursively) until f returns false.
func walkTaint(t, v ref.Val, f func(fingerprint) bool) {
	tv, ok := t.(taintVal)
	if !ok || tv.set.Len() == 0 {
		return
	}
	budget := maxTaintWalkLen
	more := true
	var walk func(v ref.Val)
	walk = func(v ref.Val) {
		if !more || budget <= 0 {
			return
		}
		budget--
		var s string
		switch x := v.(type) {
		case types.String:
			s = string(x)
		case types.Int:
			s = strconv.FormatInt(int64(x), 10)
		case types.Uint:
			s = strconv.FormatUint(uint64(x), 10)
		case traits.Mapper:
			for it := x.Iterator(); more && it.HasNext() == types.True; {
				walk(x.Get(it.Next()))
			}
			return
		case traits.Lister:
			n, _ := x.Size().(types.Int)
			for i := range int(n) {
				walk(x.Get(types.Int(i)))
			}
			return
		default:
			return
		}
		tv.set.match(s, func(_ string, fp fingerprint) bool {
			more = f(fp)
			return more
		})
	}
	walk(v)
}

// TaintSources returns the taint categories (untrusted_content,
// private_data, credential) of the fingerprinted values s carries, or nil.
func (t *TaintSet) TaintSources(s string) []string {
	var cats uint8
	t.match(s, func(_ string, fp fingerprint) bool { cats |= fp.cats; return true })
	return catNames(cats)
}

// Sources lists the results the set holds fingerprints of, oldest first,
// as "#<call number> <tool> [<categories>]".
func (t *TaintSet) Sources() []string {
	if t == nil {
		return nil
	}
	out := make([]string, 0, len(t.sources))
	for _, s := range t.sources {
		out = append(out, fmt.Sprintf("#%d %s %v", s.seq, s.name, catNames(s.cats)))
	}
	return slices.Clip(out)
}
