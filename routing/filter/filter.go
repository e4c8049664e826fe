// Package filter compiles and evaluates route filters: CEL expressions
// (cel.dev/cel-go, the language of Kubernetes validation rules and Envoy)
// over one source record. docs/filters.md is the user's reference.
//
// A filter is compiled and type-checked once, when the topology is loaded
// (Compile); evaluation (Filter.Match) is safe for concurrent use. The
// variables are
//
//	key        string               the record key (bytes taken as a string)
//	headers    map(string, string)  record headers; a repeated key: the first
//	timestamp  google.protobuf.Timestamp
//	topic      string               the source topic
//	partition  int                  the source partition
//	value      dyn                  the value decoded as JSON (numbers are double)
//
// Nothing is computed before the expression asks for it: the JSON value
// is checked (json.Valid) at most once per record, and only when
// evaluation reaches it, so `headers["severity"] == "alarm" && value.rpm >
// 3000` reads no value of a record that is not an alarm; then only the
// fields the expression selects are read, in place (lazyjson.go).
//
// Evaluation errors (a missing header or field, a value that is not JSON,
// a type mismatch at run time) make the record not match: Match returns
// false with the error, and the sender counts it.
//
// # Why CEL
//
// Both candidates were measured on the issue's workload (routing/filter/langbench,
// its own module so that this one depends on the chosen language only):
//
//	cd routing/filter/langbench && go test -run '^$' -bench . -benchmem -cpu 1 -count 3
//
// Figures, 2026-12-04 (2-core shared AMD EPYC, Go 1.26, cel-go v0.33.4,
// expr v1.17.8; medians of 3 runs on a shared machine, which vary by up
// to ±40%): records/s on one core and allocations per record, the JSON
// decode (encoding/json into any) included wherever the expression names
// value. "CEL lazy" decodes the value when evaluation reaches it, "CEL
// eager" and expr before evaluating; the header-only rows decode nothing.
//
//	workload                                  CEL lazy     CEL eager    expr
//	issue filter, record matches              115k, 36     172k, 36     155k, 38
//	issue filter, no match (half on header)   299k, 21     174k, 36     139k, 37
//	header only, matches                      1.45M, 4     2.31M, 4     1.81M, 5
//	header only, no match                     0.98M, 4     1.14M, 4     0.71M, 5
//
// This package's Match (BenchmarkMatch, the same records) reads headers
// in place instead of building a Go map per record, and the JSON value in
// place instead of decoding it whole (json.Valid, then a scan for the
// selected fields), medians of 5:
//
//	go test -run '^$' -bench Match -benchmem -cpu 1 -count 5 ./routing/filter/
//
//	issue filter, record matches      808k/s   7 allocs, 136 B
//	issue filter, no match            1.27M/s  6 allocs, 112 B
//	header only, matches              4.84M/s  4 allocs, 80 B
//	header only, no match             5.24M/s  4 allocs, 80 B
//
// (With encoding/json decoding the value whole, the first version of this
// package, the issue filter ran at 292k/s with 38 allocations.) json.Valid
// is about a third of the issue filter's time: the check that a value is
// JSON at all, which the no-match rule needs.
//
// On a whole leg (mirror BenchmarkFilteredLeg: 150,000 records of about
// 300 bytes through kfake, both gateways in one process on the 2 cores,
// 90% of records passing, medians of 5 noisy runs):
//
//	go test -run '^$' -bench FilteredLeg -benchtime 1x -count 5 ./mirror/
//
//	no filter 230k records/s; header filter 221k (-4%); header and JSON
//	field 201k (-13%).
//
// The JSON decode costs about 4 µs of the 6 µs a full-filter record takes
// in either language, so the languages differ less than the way the value
// is reached: CEL resolves variables through an activation, which lets
// the value be decoded only when evaluation gets to it (after a header
// test that fails, never), and that is what makes non-matching records
// cheap. expr takes its whole environment up front. CEL also type-checks
// against declared variables with positions for every error, which
// validate needs, and is the language SREs meet in Kubernetes and Envoy.
// The production path of this package is measured by BenchmarkMatch.
package filter

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"
	"unicode/utf8"

	"cel.dev/cel-go/cel"
	celast "cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
	"cel.dev/cel-go/interpreter"
)

// MaxLen is the longest filter accepted, in bytes.
const MaxLen = 4096

// CostLimit bounds the work of one evaluation of a filter with
// comprehensions, in CEL's cost units (about one per operation, and per
// element a comprehension visits): a filter that would take longer on a
// record (nested comprehensions over a large JSON array, say) fails on
// it, which is no match, instead of stalling the leg.
const CostLimit = 100_000

// Header is one record header.
type Header struct {
	Key   string
	Value []byte
}

// Record is what a filter sees of a source record. The filter keeps no
// reference to it after Match returns.
type Record struct {
	Topic     string
	Partition int32
	Key       []byte
	Headers   []Header
	Timestamp time.Time
	Value     []byte
}

// Filter is a compiled filter expression.
type Filter struct {
	src string
	prg cel.Program
	// usesValue is set when the expression names value: only then may a
	// record's value be decoded.
	usesValue bool
}

// Error is a problem with a filter expression at a position in it.
type Error struct {
	Line, Col int // 1-based, in the expression; Col counts characters
	Reason    string
}

func (e *Error) Error() string { return fmt.Sprintf("%d:%d: %s", e.Line, e.Col, e.Reason) }

// Errors are every problem Compile found, in the order CEL reports them.
type Errors []*Error

func (es Errors) Error() string {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// maxErrors is how many problems Compile reports: past the first few,
// CEL's parser mostly reports the consequences of the first.
const maxErrors = 3

var env = mustEnv()

func mustEnv() *cel.Env {
	e, err := cel.NewEnv(
		cel.Variable("key", cel.StringType),
		cel.Variable("headers", cel.MapType(cel.StringType, cel.StringType)),
		cel.Variable("timestamp", cel.TimestampType),
		cel.Variable("topic", cel.StringType),
		cel.Variable("partition", cel.IntType),
		cel.Variable("value", cel.DynType),
		// JSON numbers are doubles: value.rpm > 3000 must compare a
		// double with an int.
		cel.CrossTypeNumericComparisons(true),
		cel.OptionalTypes(),
		cel.ParserRecursionLimit(100),
		// Error recovery is what lets one bad expression allocate much
		// (tens of MB for 4 KiB of stray tokens): stop after a few errors.
		cel.ParserErrorRecoveryLimit(4),
		cel.ParserExpressionSizeLimit(MaxLen),
	)
	if err != nil {
		panic("filter: " + err.Error())
	}
	return e
}

// Compile parses and type-checks src. The error, if any, is Errors.
func Compile(src string) (*Filter, error) {
	if strings.TrimSpace(src) == "" {
		return nil, Errors{{Line: 1, Col: 1, Reason: "empty filter; write a boolean expression such as headers[\"severity\"] == \"alarm\", or remove filter"}}
	}
	if len(src) > MaxLen {
		return nil, Errors{{Line: 1, Col: 1, Reason: fmt.Sprintf("filter is %d bytes long, at most %d", len(src), MaxLen)}}
	}
	if !utf8.ValidString(src) {
		return nil, Errors{{Line: 1, Col: 1, Reason: "filter is not valid UTF-8"}}
	}
	// Parse and Check rather than Compile, and no Issues.Err: that formats
	// every error with a caret line built one character at a time, which
	// for a long line costs tens of MB (seen by FuzzCompile).
	parsed, iss := env.Parse(src)
	if es := issues(iss); es != nil {
		return nil, es
	}
	ast, iss := env.Check(parsed)
	if es := issues(iss); es != nil {
		return nil, es
	}
	if t := ast.OutputType(); !t.IsExactType(cel.BoolType) {
		return nil, Errors{{Line: 1, Col: 1, Reason: fmt.Sprintf("filter must be a boolean expression, but this one is of type %s (compare it, e.g. value.flag == true)", t)}}
	}
	// Without comprehensions (all, exists, map, filter) an evaluation's
	// work is bounded by the expression's size; cost tracking, which
	// doubles the time of a small filter, is only needed with them.
	opts := []cel.ProgramOption{cel.EvalOptions(cel.OptOptimize)}
	loops := false
	celast.PostOrderVisit(ast.NativeRep().Expr(), celast.NewExprVisitor(func(e celast.Expr) {
		loops = loops || e.Kind() == celast.ComprehensionKind
	}))
	if loops {
		opts = append(opts, cel.CostLimit(CostLimit))
	}
	prg, err := env.Program(ast, opts...)
	if err != nil {
		return nil, Errors{{Line: 1, Col: 1, Reason: reason(err.Error())}}
	}
	f := &Filter{src: src, prg: prg}
	if ce, err := cel.AstToCheckedExpr(ast); err == nil {
		for _, ref := range ce.GetReferenceMap() {
			if ref.GetName() == "value" {
				f.usesValue = true
			}
		}
	} else {
		f.usesValue = true
	}
	return f, nil
}

// issues are the first maxErrors problems in iss, or nil.
func issues(iss *cel.Issues) Errors {
	if iss == nil || len(iss.Errors()) == 0 {
		return nil
	}
	var out Errors
	for _, e := range iss.Errors() {
		if len(out) == maxErrors {
			break
		}
		out = append(out, &Error{Line: max(e.Location.Line(), 1), Col: max(e.Location.Column(), 0) + 1, Reason: reason(e.Message)})
	}
	return out
}

// reason makes one line of a CEL message.
func reason(msg string) string {
	msg, _, _ = strings.Cut(msg, "\n")
	return strings.TrimSpace(msg)
}

// String returns the expression as written.
func (f *Filter) String() string { return f.src }

// UsesValue reports whether the expression names value (so records may be
// decoded as JSON).
func (f *Filter) UsesValue() bool { return f.usesValue }

// Match evaluates the filter on r. A record the expression cannot be
// evaluated on does not match: Match returns false and the reason.
func (f *Filter) Match(r *Record) (bool, error) {
	a := activation{r: r}
	out, _, err := f.prg.Eval(&a)
	if err != nil {
		return false, err
	}
	b, ok := out.(types.Bool)
	if !ok {
		return false, fmt.Errorf("filter returned %s, not a bool", out.Type())
	}
	return bool(b), nil
}

// activation resolves the variables of one record as evaluation asks for
// them.
type activation struct {
	r       *Record
	value   ref.Val
	decoded bool
}

var _ interpreter.Activation = (*activation)(nil)

func (a *activation) ResolveName(name string) (any, bool) {
	switch name {
	case "key":
		return types.String(a.r.Key), true
	case "headers":
		return headerMap(a.r.Headers), true
	case "timestamp":
		return types.Timestamp{Time: a.r.Timestamp}, true
	case "topic":
		return types.String(a.r.Topic), true
	case "partition":
		return types.Int(a.r.Partition), true
	case "value":
		if !a.decoded {
			a.value, a.decoded = decodeJSON(a.r.Value), true
		}
		return a.value, true
	}
	return nil, false
}

func (a *activation) Parent() interpreter.Activation { return nil }

// ErrNotJSON is the evaluation error of a filter that reads the value of a
// record whose value is not JSON.
var ErrNotJSON = errors.New("record value is not JSON")

// headerMap is a record's headers as a CEL map(string, string), read in
// place: no Go map is built for a record.
type headerMap []Header

var (
	_             traits.Mapper = headerMap(nil)
	headerMapType               = types.NewMapType(types.StringType, types.StringType)
)

func (h headerMap) find(k ref.Val) (ref.Val, bool) {
	ks, ok := k.(types.String)
	if !ok {
		return types.MaybeNoSuchOverloadErr(k), false
	}
	for i := range h {
		if h[i].Key == string(ks) {
			return types.String(h[i].Value), true
		}
	}
	return nil, false
}

// Find implements traits.Mapper.
func (h headerMap) Find(k ref.Val) (ref.Val, bool) { return h.find(k) }

// Get implements traits.Indexer: a missing header is an error.
func (h headerMap) Get(k ref.Val) ref.Val {
	v, ok := h.find(k)
	if ok {
		return v
	}
	if v != nil {
		return v
	}
	return types.NewErr("no such header: %v", k)
}

// Contains implements traits.Container ("severity" in headers).
func (h headerMap) Contains(k ref.Val) ref.Val {
	v, ok := h.find(k)
	if !ok && v != nil {
		return v
	}
	return types.Bool(ok)
}

// Size implements traits.Sizer: distinct header keys.
func (h headerMap) Size() ref.Val { return types.Int(len(h.native())) }

// Iterator implements traits.Iterable (over distinct header keys).
func (h headerMap) Iterator() traits.Iterator {
	keys := make([]string, 0, len(h))
	seen := map[string]bool{}
	for _, x := range h {
		if !seen[x.Key] {
			seen[x.Key] = true
			keys = append(keys, x.Key)
		}
	}
	return types.NewStringList(types.DefaultTypeAdapter, keys).(traits.Lister).Iterator()
}

func (h headerMap) native() map[string]string {
	m := make(map[string]string, len(h))
	for _, x := range h {
		if _, dup := m[x.Key]; !dup {
			m[x.Key] = string(x.Value)
		}
	}
	return m
}

func (h headerMap) ConvertToNative(t reflect.Type) (any, error) {
	return types.DefaultTypeAdapter.NativeToValue(h.native()).ConvertToNative(t)
}

func (h headerMap) ConvertToType(t ref.Type) ref.Val {
	switch t {
	case headerMapType, types.MapType:
		return h
	case types.TypeType:
		return headerMapType
	}
	return types.NewErr("type conversion error from map to %s", t)
}

func (h headerMap) Equal(other ref.Val) ref.Val {
	return types.DefaultTypeAdapter.NativeToValue(h.native()).Equal(other)
}

func (h headerMap) Type() ref.Type { return headerMapType }

func (h headerMap) Value() any { return h.native() }
