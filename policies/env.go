package policies

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"
	"github.com/google/cel-go/interpreter"
)

// CEL object types of the policy environment. Their fields are read
// straight from the Input through field getters, so binding an Input costs
// no conversion: a value is built only when an expression reads it.
var (
	callType    = types.NewObjectType("toolgate.Call")
	sessionType = types.NewObjectType("toolgate.Session")
	historyType = types.NewObjectType("toolgate.HistoryEntry")
	flagType    = types.NewObjectType("toolgate.Flag")

	historyListType = types.NewListType(historyType)
	stringListType  = types.NewListType(types.StringType)
	dynMapType      = types.NewMapType(types.StringType, types.DynType)
)

type objKind uint8

const (
	kindCall objKind = iota
	kindSession
	kindHistory
	kindFlag
)

// object is a CEL value standing for one struct of an Input: the call, the
// session, one history entry or one flag.
type object struct {
	st   *evalState
	kind objKind
	idx  int // index into History or Flags
}

var _ ref.Val = (*object)(nil)

func (o *object) ConvertToNative(t reflect.Type) (any, error) {
	return nil, fmt.Errorf("toolgate: cannot convert %s to %v", o.Type().TypeName(), t)
}

func (o *object) ConvertToType(t ref.Type) ref.Val {
	if t == types.TypeType {
		return o.Type().(*types.Type)
	}
	return types.NewErr("type conversion error from '%s' to '%s'", o.Type().TypeName(), t.TypeName())
}

func (o *object) Equal(other ref.Val) ref.Val {
	p, ok := other.(*object)
	return types.Bool(ok && p.st == o.st && p.kind == o.kind && p.idx == o.idx)
}

func (o *object) Type() ref.Type {
	switch o.kind {
	case kindCall:
		return callType
	case kindSession:
		return sessionType
	case kindHistory:
		return historyType
	default:
		return flagType
	}
}

func (o *object) Value() any { return o }

// field describes one field of an object type.
type field struct {
	typ *types.Type
	get func(o *object) (ref.Val, error)
}

// fields of every object type, by type name then field name.
func objectFields() map[string]map[string]field {
	str := func(f func(o *object) string) field {
		return field{types.StringType, func(o *object) (ref.Val, error) { return types.String(f(o)), nil }}
	}
	strs := func(f func(o *object) []string) field {
		return field{stringListType, func(o *object) (ref.Val, error) { return o.st.stringList(f(o)), nil }}
	}
	hist := func(o *object) *HistoryEntry { return &o.st.in.History[o.idx] }
	flag := func(o *object) *Flag { return &o.st.in.Flags[o.idx] }
	return map[string]map[string]field{
		callType.TypeName(): {
			"server": str(func(o *object) string { return o.st.in.Call.Server }),
			"tool":   str(func(o *object) string { return o.st.in.Call.Tool }),
			"name":   str(func(o *object) string { return o.st.in.Call.Name }),
			"method": str(func(o *object) string { return o.st.in.Call.Method }),
			"args":   {dynMapType, func(o *object) (ref.Val, error) { return o.st.callArgs() }},
			"labels": strs(func(o *object) []string { return o.st.in.Call.Labels }),
		},
		sessionType.TypeName(): {
			"id":      str(func(o *object) string { return o.st.in.Session.ID }),
			"agent":   str(func(o *object) string { return o.st.in.Session.Agent }),
			"profile": str(func(o *object) string { return o.st.in.Session.Profile }),
			"labels": {types.NewMapType(types.StringType, types.StringType), func(o *object) (ref.Val, error) {
				return types.NewStringStringMap(o.st.adapter, o.st.in.Session.Labels), nil
			}},
			"started": {types.TimestampType, func(o *object) (ref.Val, error) { return types.Timestamp{Time: o.st.in.Session.Started}, nil }},
			"expires": {types.TimestampType, func(o *object) (ref.Val, error) { return types.Timestamp{Time: o.st.in.Session.Expires}, nil }},
			"age": {types.DurationType, func(o *object) (ref.Val, error) {
				return types.Duration{Duration: o.st.in.Now.Sub(o.st.in.Session.Started)}, nil
			}},
			"calls":  {types.IntType, func(o *object) (ref.Val, error) { return types.Int(o.st.in.Session.Calls), nil }},
			"denied": {types.IntType, func(o *object) (ref.Val, error) { return types.Int(o.st.in.Session.Denied), nil }},
			"risk":   {types.DoubleType, func(o *object) (ref.Val, error) { return types.Double(o.st.in.Session.Risk), nil }},
			"scope":  strs(func(o *object) []string { return o.st.in.Session.Scope }),
		},
		historyType.TypeName(): {
			"server":      str(func(o *object) string { return hist(o).Server }),
			"tool":        str(func(o *object) string { return hist(o).Tool }),
			"name":        str(func(o *object) string { return hist(o).Name }),
			"args":        {dynMapType, func(o *object) (ref.Val, error) { return o.st.historyArgs(o.idx) }},
			"decision":    str(func(o *object) string { return hist(o).Decision }),
			"time":        {types.TimestampType, func(o *object) (ref.Val, error) { return types.Timestamp{Time: hist(o).Time}, nil }},
			"labels":      strs(func(o *object) []string { return hist(o).Labels }),
			"result_tags": strs(func(o *object) []string { return hist(o).ResultTags }),
		},
		flagType.TypeName(): {
			"kind":   str(func(o *object) string { return flag(o).Kind }),
			"detail": str(func(o *object) string { return flag(o).Detail }),
			"score":  {types.DoubleType, func(o *object) (ref.Val, error) { return types.Double(flag(o).Score), nil }},
		},
	}
}

// provider adds toolgate's object types to CEL's standard registry.
type provider struct {
	*types.Registry
	structs map[string]*types.Type
	fields  map[string]map[string]*types.FieldType
	names   map[string][]string
}

func newProvider() (*provider, error) {
	reg, err := types.NewRegistry()
	if err != nil {
		return nil, fmt.Errorf("new CEL registry: %w", err)
	}
	p := &provider{
		Registry: reg,
		structs:  map[string]*types.Type{},
		fields:   map[string]map[string]*types.FieldType{},
		names:    map[string][]string{},
	}
	for _, t := range []*types.Type{callType, sessionType, historyType, flagType} {
		p.structs[t.TypeName()] = t
	}
	for typeName, fs := range objectFields() {
		p.fields[typeName] = map[string]*types.FieldType{}
		for name, f := range fs {
			get := f.get
			p.fields[typeName][name] = &types.FieldType{
				Type:  f.typ,
				IsSet: func(any) bool { return true },
				GetFrom: func(target any) (any, error) {
					o, ok := target.(*object)
					if !ok {
						return nil, fmt.Errorf("toolgate: field %q read from %T", name, target)
					}
					return get(o)
				},
			}
			p.names[typeName] = append(p.names[typeName], name)
		}
	}
	return p, nil
}

func (p *provider) FindStructType(name string) (*types.Type, bool) {
	if t, ok := p.structs[name]; ok {
		return types.NewTypeTypeWithParam(t), true
	}
	return p.Registry.FindStructType(name)
}

func (p *provider) FindIdent(name string) (ref.Val, bool) {
	if t, ok := p.structs[name]; ok {
		return t, true
	}
	return p.Registry.FindIdent(name)
}

func (p *provider) FindStructFieldNames(name string) ([]string, bool) {
	if n, ok := p.names[name]; ok {
		return n, true
	}
	return p.Registry.FindStructFieldNames(name)
}

func (p *provider) FindStructFieldType(typeName, fieldName string) (*types.FieldType, bool) {
	if fs, ok := p.fields[typeName]; ok {
		f, ok := fs[fieldName]
		return f, ok
	}
	return p.Registry.FindStructFieldType(typeName, fieldName)
}

func (p *provider) NewValue(name string, fields map[string]ref.Val) ref.Val {
	if _, ok := p.structs[name]; ok {
		return types.NewErr("%s values cannot be built in a policy", name)
	}
	return p.Registry.NewValue(name, fields)
}

// evalState binds one Input for all rules of one decision. It is the CEL
// activation: each variable is built on first use and kept.
type evalState struct {
	in      *Input
	adapter types.Adapter

	call, session *object
	history       ref.Val
	flags         ref.Val
	agent         ref.Val

	args        ref.Val
	argsErr     error
	histArgs    []ref.Val
	histArgsErr []error

	bounds int8 // withinBounds(in): 0 not yet known, 1 yes, -1 no

	// lists remembers the CEL values of recently read string lists: a
	// history scan reads the same labels of every entry, once per rule.
	lists     [8]memoList
	listsNext int
}

type memoList struct {
	src []string
	val ref.Val
}

// stringList is the CEL list of l, built once per decision for equal
// lists read close together. Its elements are CEL strings already, so
// "x in list" compares without converting each element.
func (s *evalState) stringList(l []string) ref.Val {
	for i := range s.lists {
		m := &s.lists[i]
		if m.val != nil && slices.Equal(m.src, l) {
			return m.val
		}
	}
	vals := make([]ref.Val, len(l))
	for i, x := range l {
		vals[i] = types.String(x)
	}
	v := types.NewRefValList(s.adapter, vals)
	s.lists[s.listsNext] = memoList{src: l, val: v}
	s.listsNext = (s.listsNext + 1) % len(s.lists)
	return v
}

// withinBounds is withinBounds(s.in), computed once per decision.
func (s *evalState) withinBounds() bool {
	if s.bounds == 0 {
		s.bounds = -1
		if withinBounds(s.in) {
			s.bounds = 1
		}
	}
	return s.bounds == 1
}

var _ interpreter.Activation = (*evalState)(nil)

func (s *evalState) ResolveName(name string) (any, bool) {
	switch name {
	case "call":
		if s.call == nil {
			s.call = &object{st: s, kind: kindCall}
		}
		return s.call, true
	case "session":
		if s.session == nil {
			s.session = &object{st: s, kind: kindSession}
		}
		return s.session, true
	case "history":
		if s.history == nil {
			s.history = historyList{s.objectList(kindHistory, len(s.in.History)), s}
		}
		return s.history, true
	case "flags":
		if s.flags == nil {
			s.flags = s.objectList(kindFlag, len(s.in.Flags))
		}
		return s.flags, true
	case "agent":
		if s.agent == nil {
			claims := s.in.Agent
			if claims == nil {
				claims = map[string]any{}
			}
			s.agent = types.NewStringInterfaceMap(s.adapter, claims)
		}
		return s.agent, true
	case "now":
		return types.Timestamp{Time: s.in.Now}, true
	case taintVar:
		return taintVal{set: s.in.Taint}, true
	}
	return nil, false
}

func (s *evalState) Parent() interpreter.Activation { return nil }

// historyList is the history variable itself; functions over it read the
// Input's entries directly instead of boxing each element.
type historyList struct {
	traits.Lister
	st *evalState
}

func (s *evalState) objectList(kind objKind, n int) traits.Lister {
	objs := make([]object, n)
	vals := make([]ref.Val, n)
	for i := range objs {
		objs[i] = object{st: s, kind: kind, idx: i}
		vals[i] = &objs[i]
	}
	return types.NewRefValList(s.adapter, vals)
}

func (s *evalState) callArgs() (ref.Val, error) {
	if s.args == nil && s.argsErr == nil {
		m, err := ParseArgs(s.in.Call.Args)
		if err != nil {
			s.argsErr = fmt.Errorf("call.args: %w", err)
		} else {
			s.args = types.NewStringInterfaceMap(s.adapter, m)
		}
	}
	return s.args, s.argsErr
}

func (s *evalState) historyArgs(i int) (ref.Val, error) {
	if s.histArgs == nil {
		s.histArgs = make([]ref.Val, len(s.in.History))
		s.histArgsErr = make([]error, len(s.in.History))
	}
	if s.histArgs[i] == nil && s.histArgsErr[i] == nil {
		m, err := ParseArgs(s.in.History[i].Args)
		if err != nil {
			s.histArgsErr[i] = fmt.Errorf("history[%d].args: %w", i, err)
		} else {
			s.histArgs[i] = types.NewStringInterfaceMap(s.adapter, m)
		}
	}
	return s.histArgs[i], s.histArgsErr[i]
}

// historyOf returns the entry behind a history element, or an error if the
// element is not one (which the type checker should make impossible).
func historyOf(v ref.Val) (*HistoryEntry, *evalState, error) {
	o, ok := v.(*object)
	if !ok || o.kind != kindHistory {
		return nil, nil, errors.New("not a history entry")
	}
	return &o.st.in.History[o.idx], o.st, nil
}

// newCELEnv builds the typed environment every policy expression is
// compiled in.
func newCELEnv(fn *functions) (*cel.Env, error) {
	p, err := newProvider()
	if err != nil {
		return nil, err
	}
	opts := []cel.EnvOption{
		cel.CustomTypeProvider(p),
		cel.CustomTypeAdapter(p),
		cel.Variable("call", callType),
		cel.Variable("session", sessionType),
		cel.Variable("history", historyListType),
		cel.Variable("agent", dynMapType),
		cel.Variable("now", types.TimestampType),
		cel.Variable("flags", types.NewListType(flagType)),
	}
	opts = append(opts, fn.envOptions()...)
	opts = append(opts, taintEnvOptions()...)
	env, err := cel.NewEnv(opts...)
	if err != nil {
		return nil, fmt.Errorf("build CEL environment: %w", err)
	}
	return env, nil
}

// durationOf is time.Duration of a CEL duration value.
func durationOf(v ref.Val) (time.Duration, bool) {
	d, ok := v.(types.Duration)
	return d.Duration, ok
}
