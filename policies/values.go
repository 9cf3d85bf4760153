package policies

import (
	"errors"
	"reflect"

	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"
)

// strSlice is the CEL list(string) of a []string field of the Input, read
// in place. It holds one pointer, so making one allocates nothing, and
// `x in list` compares strings without building CEL values; everything
// else goes through CEL's own string list.
type strSlice struct{ p *[]string }

var _ traits.Lister = strSlice{}

func (l strSlice) list() traits.Lister { return types.NewStringList(types.DefaultTypeAdapter, *l.p) }

func (l strSlice) Contains(v ref.Val) ref.Val {
	s, ok := v.(types.String)
	if !ok {
		return l.list().Contains(v)
	}
	for _, x := range *l.p {
		if x == string(s) {
			return types.True
		}
	}
	return types.False
}

func (l strSlice) Size() ref.Val { return types.Int(len(*l.p)) }

func (l strSlice) Add(other ref.Val) ref.Val                   { return l.list().Add(other) }
func (l strSlice) Get(index ref.Val) ref.Val                   { return l.list().Get(index) }
func (l strSlice) Iterator() traits.Iterator                   { return l.list().Iterator() }
func (l strSlice) ConvertToNative(t reflect.Type) (any, error) { return l.list().ConvertToNative(t) }
func (l strSlice) ConvertToType(t ref.Type) ref.Val            { return l.list().ConvertToType(t) }
func (l strSlice) Equal(other ref.Val) ref.Val                 { return l.list().Equal(other) }
func (l strSlice) Type() ref.Type                              { return types.ListType }
func (l strSlice) Value() any                                  { return *l.p }

// objList is the CEL list of the history entries or flags of an Input.
// Iterating it, as comprehensions do, hands out its objects as they are;
// everything else goes through a CEL list of them, built on first use.
type objList struct {
	st   *evalState
	objs []object
	made int // objs[:made] are set, possibly beyond len(objs)
	vals traits.Lister
	// size is Size's value, for len(objs) = sizeOf: kept from one
	// decision to the next, as a length over 255 allocates.
	size   ref.Val
	sizeOf int
}

var _ traits.Lister = (*objList)(nil)

func (l *objList) list() traits.Lister {
	if l.vals == nil {
		vals := make([]ref.Val, len(l.objs))
		for i := range l.objs {
			vals[i] = &l.objs[i]
		}
		l.vals = types.NewRefValList(l.st.adapter, vals)
	}
	return l.vals
}

func (l *objList) Iterator() traits.Iterator { return l.st.iterator(l.objs) }

func (l *objList) Size() ref.Val {
	if l.size == nil || l.sizeOf != len(l.objs) {
		l.size, l.sizeOf = types.Int(len(l.objs)), len(l.objs)
	}
	return l.size
}

func (l *objList) Add(other ref.Val) ref.Val                   { return l.list().Add(other) }
func (l *objList) Contains(v ref.Val) ref.Val                  { return l.list().Contains(v) }
func (l *objList) Get(index ref.Val) ref.Val                   { return l.list().Get(index) }
func (l *objList) ConvertToNative(t reflect.Type) (any, error) { return l.list().ConvertToNative(t) }
func (l *objList) ConvertToType(t ref.Type) ref.Val            { return l.list().ConvertToType(t) }
func (l *objList) Equal(other ref.Val) ref.Val                 { return l.list().Equal(other) }
func (l *objList) Type() ref.Type                              { return types.ListType }
func (l *objList) Value() any                                  { return l.list().Value() }

// objIter iterates over an objList.
type objIter struct {
	objs []object
	next int
}

func (it *objIter) HasNext() ref.Val { return types.Bool(it.next < len(it.objs)) }

func (it *objIter) Next() ref.Val {
	if it.next >= len(it.objs) {
		return nil
	}
	it.next++
	return &it.objs[it.next-1]
}

// An iterator is not a value a policy can see; these mirror CEL's own
// iterators.
func (*objIter) ConvertToNative(reflect.Type) (any, error) {
	return nil, errors.New("type conversion on iterators not supported")
}
func (*objIter) ConvertToType(ref.Type) ref.Val { return types.NewErr("no such overload") }
func (*objIter) Equal(ref.Val) ref.Val          { return types.NewErr("no such overload") }
func (*objIter) Type() ref.Type                 { return types.IteratorType }
func (*objIter) Value() any                     { return nil }
