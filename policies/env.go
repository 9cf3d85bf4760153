package policies

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
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
	strs := func(f func(o *object) *[]string) field {
		return field{stringListType, func(o *object) (ref.Val, error) { return strSlice{f(o)}, nil }}
	}
	// The call's strings are read by many rules of a pack: each is made a
	// CEL value once per decision.
	callStr := func(i int, f func(c *Call) string) field {
		return field{types.StringType, func(o *object) (ref.Val, error) {
			st := o.st
			if st.callStrs[i] == nil {
				st.callStrs[i] = types.String(f(&st.in.Call))
			}
			return st.callStrs[i], nil
		}}
	}
	hist := func(o *object) *HistoryEntry { return &o.st.in.History[o.idx] }
	flag := func(o *object) *Flag { return &o.st.in.Flags[o.idx] }
	return map[string]map[string]field{
		callType.TypeName(): {
			"server": callStr(0, func(c *Call) string { return c.Server }),
			"tool":   callStr(1, func(c *Call) string { return c.Tool }),
			"name":   callStr(2, func(c *Call) string { return c.Name }),
			"method": callStr(3, func(c *Call) string { return c.Method }),
			"args":   {dynMapType, func(o *object) (ref.Val, error) { return o.st.callArgs() }},
			"labels": strs(func(o *object) *[]string { return &o.st.in.Call.Labels }),
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
			"risk": {types.DoubleType, func(o *object) (ref.Val, error) {
				st := o.st
				if st.risk == nil {
					st.risk = types.Double(st.in.Session.Risk)
				}
				return st.risk, nil
			}},
			"scope": strs(func(o *object) *[]string { return &o.st.in.Session.Scope }),
		},
		historyType.TypeName(): {
			"server":      str(func(o *object) string { return hist(o).Server }),
			"tool":        str(func(o *object) string { return hist(o).Tool }),
			"name":        str(func(o *object) string { return hist(o).Name }),
			"args":        {dynMapType, func(o *object) (ref.Val, error) { return o.st.historyArgs(o.idx) }},
			"decision":    str(func(o *object) string { return hist(o).Decision }),
			"time":        {types.TimestampType, func(o *object) (ref.Val, error) { return types.Timestamp{Time: hist(o).Time}, nil }},
			"labels":      strs(func(o *object) *[]string { return &hist(o).Labels }),
			"result_tags": strs(func(o *object) *[]string { return &hist(o).ResultTags }),
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

// NativeToValue returns toolgate's own values, and the booleans
// comprehensions pass around, as they are: CEL passes every element,
// field and variable it reads through here, and the registry's generic
// switch is slow to reach them.
func (p *provider) NativeToValue(v any) ref.Val {
	switch t := v.(type) {
	case *object:
		return t
	case strSlice:
		return t
	case types.Bool:
		return t
	}
	return p.Registry.NativeToValue(v)
}

func (p *provider) NewValue(name string, fields map[string]ref.Val) ref.Val {
	if _, ok := p.structs[name]; ok {
		return types.NewErr("%s values cannot be built in a policy", name)
	}
	return p.Registry.NewValue(name, fields)
}

// evalState binds one Input for all rules of one decision. It is the CEL
// activation: each variable is built on first use and kept.
//
// Decisions take their states from a pool (newEvalState, release), so
// that the memory a state grew, above all one object per history entry,
// serves the next decision. No value of a decision is referenced after
// it: Decide keeps only strings and booleans of what CEL returned.
type evalState struct {
	in      *Input
	adapter types.Adapter

	call, session       *object
	callObj, sessionObj object
	history             ref.Val
	flags               ref.Val
	agent               ref.Val

	// histList and flagList back history and flags; their objects stay
	// valid from one decision to the next, as they point to this state.
	histList, flagList objList
	// iters are handed out by the lists' Iterator, one per
	// comprehension; past the last, iterators are allocated.
	iters  [16]objIter
	nIters int

	callStrs [4]ref.Val // call.server, tool, name, method
	risk     ref.Val    // session.risk

	args        ref.Val
	argsErr     error
	histArgs    []ref.Val
	histArgsErr []error

	bounds int8 // withinBounds(in): 0 not yet known, 1 yes, -1 no

	// slots hold the values of the comprehensions rules share (memo.go),
	// made on first use.
	slots  []ref.Val
	nSlots int

	// scans holds what the Set remembers of this session's history
	// scans (scanmemo.go) and bounds (bounds.go); scanSess is this
	// session's part, looked up on first use (scanState 1) or found
	// unusable (-1).
	scans     *scanMemory
	scanSess  *sessionScans
	scanState int8

	// calls remembers the results of history functions over the whole
	// history: rules of a pack repeat the same few calls.
	calls    []histCall
	callsBuf [4]histCall
}

// histCall is one call of sequence (globs set) or countSince (count set)
// over the whole history, and its result.
type histCall struct {
	count             bool
	since             time.Time
	pattern, decision string
	globs             []glob
	val               ref.Val
}

// recall returns the result of an earlier countSince call equal to k, or
// nil.
func (s *evalState) recall(k *histCall) ref.Val {
	for i := range s.calls {
		c := &s.calls[i]
		if c.count && c.since.Equal(k.since) && c.pattern == k.pattern && c.decision == k.decision {
			return c.val
		}
	}
	return nil
}

// recallSequence returns the result of an earlier sequence call with the
// np patterns ps, or nil.
func (s *evalState) recallSequence(ps traits.Lister, np int) ref.Val {
next:
	for i := range s.calls {
		c := &s.calls[i]
		if c.count || len(c.globs) != np {
			continue
		}
		for j, g := range c.globs {
			if p, ok := ps.Get(types.Int(j)).(types.String); !ok || string(p) != g.pattern {
				continue next
			}
		}
		return c.val
	}
	return nil
}

func (s *evalState) remember(c histCall) {
	if s.calls == nil {
		s.calls = s.callsBuf[:0]
	}
	s.calls = append(s.calls, c)
}

// scanSession returns the remembered scan results of the decision's
// session, or nil if its history cannot be remembered.
func (s *evalState) scanSession() *sessionScans {
	if s.scanState == 0 {
		s.scanState = -1
		if s.scans != nil && s.in.Session.ID != "" && seqsUsable(s.in.History) {
			s.scanSess, s.scanState = s.scans.session(s.in), 1
		}
	}
	return s.scanSess
}

// withinBounds is withinBounds(s.in), computed once per decision. The
// fixed fields of an entry of a session are checked on the entry's first
// decision only (sessionScans.historyWithinBounds).
func (s *evalState) withinBounds() bool {
	if s.bounds == 0 {
		s.bounds = -1
		ok := callWithinBounds(s.in)
		if ok {
			if mem := s.scanSession(); mem != nil {
				ok = mem.historyWithinBounds(s.in.History)
			} else {
				ok = withinBounds(s.in)
			}
		}
		if ok {
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
			s.callObj = object{st: s, kind: kindCall}
			s.call = &s.callObj
		}
		return s.call, true
	case "session":
		if s.session == nil {
			s.sessionObj = object{st: s, kind: kindSession}
			s.session = &s.sessionObj
		}
		return s.session, true
	case "history":
		if s.history == nil {
			s.history = historyList{s.objectList(&s.histList, kindHistory, len(s.in.History))}
		}
		return s.history, true
	case "flags":
		if s.flags == nil {
			s.flags = s.objectList(&s.flagList, kindFlag, len(s.in.Flags))
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
	case stateVar:
		return s, true
	}
	return nil, false
}

func (s *evalState) Parent() interpreter.Activation { return nil }

// historyList is the history variable itself; functions over it read the
// Input's entries directly instead of going through its elements.
type historyList struct{ *objList }

// objectList readies l, one of s's lists, to hold n objects of kind. The
// objects an earlier decision made are still right: they point to s, and
// each list holds one kind.
func (s *evalState) objectList(l *objList, kind objKind, n int) *objList {
	if cap(l.objs) < n {
		l.objs, l.made = make([]object, n), 0
	}
	l.objs = l.objs[:n]
	for i := l.made; i < n; i++ {
		l.objs[i] = object{st: s, kind: kind, idx: i}
	}
	l.made = max(l.made, n)
	l.st, l.vals = s, nil
	return l
}

// iterator returns an iterator over objs.
func (s *evalState) iterator(objs []object) *objIter {
	if s.nIters == len(s.iters) {
		return &objIter{objs: objs}
	}
	it := &s.iters[s.nIters]
	s.nIters++
	*it = objIter{objs: objs}
	return it
}

var evalStates = sync.Pool{New: func() any { return new(evalState) }}

// newEvalState returns a state that binds in for one decision of a set
// with these shared comprehension slots and scan memory. Call release
// once the decision is made.
func newEvalState(in *Input, adapter types.Adapter, nSlots int, scans *scanMemory) *evalState {
	s := evalStates.Get().(*evalState)
	s.in, s.adapter, s.nSlots, s.scans = in, adapter, nSlots, scans
	return s
}

// release empties s, keeping the memory it grew, and returns it to the
// pool. Nothing may use s or a value it made afterwards.
func (s *evalState) release() {
	hist, flags := s.histList, s.flagList
	hist.vals, flags.vals = nil, nil
	histArgs, histArgsErr, slots := s.histArgs, s.histArgsErr, s.slots
	clear(histArgs)
	clear(histArgsErr)
	clear(slots)
	*s = evalState{
		histList: hist, flagList: flags,
		histArgs: histArgs[:0], histArgsErr: histArgsErr[:0], slots: slots[:0],
	}
	evalStates.Put(s)
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
	if n := len(s.in.History); len(s.histArgs) != n {
		s.histArgs = slices.Grow(s.histArgs[:0], n)[:n]
		s.histArgsErr = slices.Grow(s.histArgsErr[:0], n)[:n]
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
