// Package langbench compares the two candidate expression languages for
// route filters, CEL (cel.dev/cel-go) and expr (github.com/expr-lang/expr),
// on the filter workload of a sending gateway: one expression over a
// record's key, headers, timestamp, topic, partition and JSON value, the
// value decoded once per record (encoding/json, included in the figures).
//
// It is its own module so that the main module depends only on the
// language chosen (CEL; the figures are in the routing/filter package doc):
//
//	cd routing/filter/langbench && go test -run '^$' -bench . -benchmem -cpu 1
package langbench

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"cel.dev/cel-go/cel"
	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"
)

const (
	full       = `headers["severity"] in ["alarm", "critical"] && value.engine.rpm > 3000`
	headerOnly = `headers["severity"] in ["alarm", "critical"]`
)

type header struct{ key, value string }

type record struct {
	key       []byte
	headers   []header
	timestamp time.Time
	topic     string
	partition int32
	value     []byte
}

// records returns n records that all match the full filter (match) or
// none of them do, half of the misses on the header and half on the field.
func records(n int, match bool) []record {
	out := make([]record, n)
	for i := range out {
		sev, rpm := "alarm", 3500+i%100
		if i%2 == 1 {
			sev = "critical"
		}
		if !match {
			if i%2 == 0 {
				sev = "info"
			} else {
				rpm = 1200
			}
		}
		out[i] = record{
			key:       fmt.Appendf(nil, "vessel-7/engine-%d", i%4),
			headers:   []header{{"severity", sev}, {"source", "plc-3"}, {"trace", "00f067aa0ba902b7"}},
			timestamp: time.UnixMilli(1_780_000_000_000 + int64(i)),
			topic:     "telemetry.engine",
			partition: int32(i % 12),
			value: fmt.Appendf(nil, `{"vessel":"v7","engine":{"id":%d,"rpm":%d,"temp_c":81.5,"oil_bar":4.2},"ts":"2026-12-04T10:00:00Z","tags":["a","b"]}`,
				i%4, rpm),
		}
	}
	return out
}

func headerMap(r *record) map[string]string {
	m := make(map[string]string, len(r.headers))
	for _, h := range r.headers {
		m[h.key] = h.value
	}
	return m
}

func decode(b []byte) any {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil
	}
	return v
}

// celActivation resolves variables as the program asks for them: lazily,
// the value is decoded only when evaluation reaches it (never when an &&
// short-circuits before it).
type celActivation struct {
	r       *record
	value   any
	decoded bool
}

func (a *celActivation) ResolveName(name string) (any, bool) {
	switch name {
	case "key":
		return string(a.r.key), true
	case "headers":
		return headerMap(a.r), true
	case "timestamp":
		return a.r.timestamp, true
	case "topic":
		return a.r.topic, true
	case "partition":
		return int64(a.r.partition), true
	case "value":
		if !a.decoded {
			a.value, a.decoded = decode(a.r.value), true
		}
		return a.value, true
	}
	return nil, false
}

func (a *celActivation) Parent() cel.Activation { return nil }

func celProgram(b *testing.B, src string) cel.Program {
	env, err := cel.NewEnv(
		cel.Variable("key", cel.StringType),
		cel.Variable("headers", cel.MapType(cel.StringType, cel.StringType)),
		cel.Variable("timestamp", cel.TimestampType),
		cel.Variable("topic", cel.StringType),
		cel.Variable("partition", cel.IntType),
		cel.Variable("value", cel.DynType),
		cel.CrossTypeNumericComparisons(true),
	)
	if err != nil {
		b.Fatal(err)
	}
	ast, iss := env.Compile(src)
	if iss.Err() != nil {
		b.Fatal(iss.Err())
	}
	prg, err := env.Program(ast, cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		b.Fatal(err)
	}
	return prg
}

type exprEnv struct {
	Key       string            `expr:"key"`
	Headers   map[string]string `expr:"headers"`
	Timestamp time.Time         `expr:"timestamp"`
	Topic     string            `expr:"topic"`
	Partition int               `expr:"partition"`
	Value     any               `expr:"value"`
}

func exprProgram(b *testing.B, src string) *vm.Program {
	prg, err := expr.Compile(src, expr.Env(exprEnv{}), expr.AsBool())
	if err != nil {
		b.Fatal(err)
	}
	return prg
}

func run(b *testing.B, recs []record, want bool, eval func(*record) bool) {
	for i := range recs {
		if got := eval(&recs[i]); got != want {
			b.Fatalf("record %d: got %v, want %v", i, got, want)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		eval(&recs[i%len(recs)])
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

func Benchmark(b *testing.B) {
	for _, c := range []struct {
		name, src string
		match     bool
	}{
		{"full/match", full, true},
		{"full/nomatch", full, false},
		{"header/match", headerOnly, true},
		{"header/nomatch", `headers["severity"] in ["debug", "trace"]`, false},
	} {
		recs := records(1024, c.match)
		// Both decode the value only when the expression names it.
		needsValue := strings.Contains(c.src, "value")
		maybeDecode := func(b []byte) any {
			if needsValue {
				return decode(b)
			}
			return nil
		}
		b.Run("cel-lazy/"+c.name, func(b *testing.B) {
			prg := celProgram(b, c.src)
			act := &celActivation{}
			run(b, recs, c.match, func(r *record) bool {
				*act = celActivation{r: r}
				out, _, err := prg.Eval(act)
				return err == nil && out.Value() == true
			})
		})
		b.Run("cel-eager/"+c.name, func(b *testing.B) {
			prg := celProgram(b, c.src)
			act := &celActivation{}
			run(b, recs, c.match, func(r *record) bool {
				*act = celActivation{r: r, value: maybeDecode(r.value), decoded: true}
				out, _, err := prg.Eval(act)
				return err == nil && out.Value() == true
			})
		})
		b.Run("expr/"+c.name, func(b *testing.B) {
			prg := exprProgram(b, c.src)
			var env exprEnv
			var machine vm.VM
			run(b, recs, c.match, func(r *record) bool {
				env = exprEnv{Key: string(r.key), Headers: headerMap(r), Timestamp: r.timestamp, Topic: r.topic,
					Partition: int(r.partition), Value: maybeDecode(r.value)}
				out, err := machine.Run(prg, env)
				return err == nil && out == true
			})
		})
	}
}
