package filter

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
)

// A record's JSON value is checked once (json.Valid, which allocates
// nothing) and then read in place: selecting value.engine.rpm scans the
// raw bytes for "engine", then inside it for "rpm", and parses only that
// number. Objects and arrays are CEL maps and lists over their raw bytes;
// what needs the whole of one (iterating it, comparing it, converting it)
// decodes that part with encoding/json. A filter over one or two fields
// thus costs a scan of the value instead of building it as Go maps.

// decodeJSON returns the CEL value of a record value, or an error value
// (ErrNotJSON) when it is not JSON.
func decodeJSON(b []byte) ref.Val {
	if !json.Valid(b) {
		var v any
		err := json.Unmarshal(b, &v) // for the reason
		return types.WrapErr(fmt.Errorf("%w: %v", ErrNotJSON, err))
	}
	end := len(b)
	for end > 0 && (b[end-1] == ' ' || b[end-1] == '\t' || b[end-1] == '\n' || b[end-1] == '\r') {
		end--
	}
	return jsonValue(b[skipSpace(b, 0):end])
}

// jsonValue is the CEL value of raw, exactly one valid JSON value.
func jsonValue(raw []byte) ref.Val {
	switch raw[0] {
	case '{':
		return jsonObject(raw)
	case '[':
		return jsonArray(raw)
	case '"':
		return jsonString(raw)
	case 't':
		return types.True
	case 'f':
		return types.False
	case 'n':
		return types.NullValue
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil {
		return types.WrapErr(fmt.Errorf("%w: number %s: %v", ErrNotJSON, raw, err))
	}
	return types.Double(f)
}

func jsonString(raw []byte) ref.Val {
	inner := raw[1 : len(raw)-1]
	for _, c := range inner {
		if c == '\\' {
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return types.WrapErr(fmt.Errorf("%w: %v", ErrNotJSON, err))
			}
			return types.String(s)
		}
	}
	return types.String(inner)
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipValue returns the index after the valid JSON value at b[i].
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		for i++; i < len(b); i++ {
			switch b[i] {
			case '\\':
				i++
			case '"':
				return i + 1
			}
		}
		return len(b)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				i = skipValue(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
		return len(b)
	}
	for i < len(b) {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return i
		}
		i++
	}
	return i
}

// members calls f with each key (raw, quotes included) and value of a
// valid JSON object, until f returns false.
func members(obj []byte, f func(key, val []byte) bool) {
	i := skipSpace(obj, 1)
	for i < len(obj) && obj[i] == '"' {
		kEnd := skipValue(obj, i)
		key := obj[i:kEnd]
		i = skipSpace(obj, kEnd)
		i = skipSpace(obj, i+1) // the ':'
		vEnd := skipValue(obj, i)
		if !f(key, obj[i:vEnd]) {
			return
		}
		i = skipSpace(obj, vEnd)
		if i < len(obj) && obj[i] == ',' {
			i = skipSpace(obj, i+1)
		}
	}
}

// elements calls f with each element of a valid JSON array, until f
// returns false.
func elements(arr []byte, f func(val []byte) bool) {
	i := skipSpace(arr, 1)
	for i < len(arr) && arr[i] != ']' {
		end := skipValue(arr, i)
		if !f(arr[i:end]) {
			return
		}
		i = skipSpace(arr, end)
		if i < len(arr) && arr[i] == ',' {
			i = skipSpace(arr, i+1)
		}
	}
}

// keyIs reports whether a raw JSON key is s.
func keyIs(raw []byte, s string) bool {
	inner := raw[1 : len(raw)-1]
	for _, c := range inner {
		if c == '\\' {
			var k string
			return json.Unmarshal(raw, &k) == nil && k == s
		}
	}
	return string(inner) == s
}

// decodeAll is the value decoded whole, for what needs all of it.
func decodeAll(raw []byte) ref.Val {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return types.WrapErr(fmt.Errorf("%w: %v", ErrNotJSON, err))
	}
	return types.DefaultTypeAdapter.NativeToValue(v)
}

// jsonObject is a JSON object as a CEL map(string, dyn).
type jsonObject []byte

var _ traits.Mapper = jsonObject(nil)

// Find implements traits.Mapper: the last member of that key, as
// encoding/json takes it.
func (o jsonObject) Find(k ref.Val) (ref.Val, bool) {
	ks, ok := k.(types.String)
	if !ok {
		return types.MaybeNoSuchOverloadErr(k), false
	}
	var found []byte
	members(o, func(key, val []byte) bool {
		if keyIs(key, string(ks)) {
			found = val
		}
		return true
	})
	if found == nil {
		return nil, false
	}
	return jsonValue(found), true
}

func (o jsonObject) Get(k ref.Val) ref.Val {
	v, ok := o.Find(k)
	if ok || v != nil {
		return v
	}
	return types.NewErr("no such key: %v", k)
}

func (o jsonObject) Contains(k ref.Val) ref.Val {
	v, ok := o.Find(k)
	if !ok && v != nil {
		return v
	}
	return types.Bool(ok)
}

func (o jsonObject) Size() ref.Val {
	n := 0
	seen := map[string]bool{}
	members(o, func(key, _ []byte) bool {
		if !seen[string(key)] {
			seen[string(key)] = true
			n++
		}
		return true
	})
	return types.Int(n)
}

func (o jsonObject) Iterator() traits.Iterator {
	if it, ok := decodeAll(o).(traits.Iterable); ok {
		return it.Iterator()
	}
	return types.NewStringList(types.DefaultTypeAdapter, nil).(traits.Lister).Iterator()
}

func (o jsonObject) ConvertToNative(t reflect.Type) (any, error) {
	return decodeAll(o).ConvertToNative(t)
}

func (o jsonObject) ConvertToType(t ref.Type) ref.Val {
	switch t {
	case types.MapType:
		return o
	case types.TypeType:
		return types.MapType
	}
	return decodeAll(o).ConvertToType(t)
}

func (o jsonObject) Equal(other ref.Val) ref.Val { return decodeAll(o).Equal(other) }
func (o jsonObject) Type() ref.Type              { return types.MapType }
func (o jsonObject) Value() any                  { return decodeAll(o).Value() }

// jsonArray is a JSON array as a CEL list(dyn).
type jsonArray []byte

var _ traits.Lister = jsonArray(nil)

func (a jsonArray) Get(i ref.Val) ref.Val {
	idx, ok := i.(types.Int)
	if !ok {
		if d, isD := i.(types.Double); isD && float64(d) == float64(int64(d)) {
			idx, ok = types.Int(d), true
		}
	}
	if !ok {
		return types.MaybeNoSuchOverloadErr(i)
	}
	var found []byte
	n := types.Int(0)
	elements(a, func(v []byte) bool {
		if n == idx {
			found = v
			return false
		}
		n++
		return true
	})
	if found == nil {
		return types.NewErr("index out of range: %d", idx)
	}
	return jsonValue(found)
}

func (a jsonArray) Size() ref.Val {
	n := 0
	elements(a, func([]byte) bool { n++; return true })
	return types.Int(n)
}

func (a jsonArray) Contains(v ref.Val) ref.Val {
	return asLister(decodeAll(a)).Contains(v)
}

func (a jsonArray) Add(other ref.Val) ref.Val {
	return asLister(decodeAll(a)).Add(other)
}

func (a jsonArray) Iterator() traits.Iterator {
	return asLister(decodeAll(a)).Iterator()
}

func (a jsonArray) ConvertToNative(t reflect.Type) (any, error) {
	return decodeAll(a).ConvertToNative(t)
}

func (a jsonArray) ConvertToType(t ref.Type) ref.Val {
	switch t {
	case types.ListType:
		return a
	case types.TypeType:
		return types.ListType
	}
	return decodeAll(a).ConvertToType(t)
}

func (a jsonArray) Equal(other ref.Val) ref.Val { return decodeAll(a).Equal(other) }
func (a jsonArray) Type() ref.Type              { return types.ListType }
func (a jsonArray) Value() any                  { return decodeAll(a).Value() }

// asLister is a decoded array as a list (an error value stays one).
func asLister(v ref.Val) traits.Lister {
	if l, ok := v.(traits.Lister); ok {
		return l
	}
	return types.NewDynamicList(types.DefaultTypeAdapter, []ref.Val{v}).(traits.Lister)
}
