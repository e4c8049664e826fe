package filter

import (
	"testing"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/interpreter"
)

// eager is activation with the value decoded whole by encoding/json: the
// reference the in-place reading must agree with.
type eager struct{ activation }

func (e *eager) ResolveName(name string) (any, bool) {
	if name == "value" {
		if !jsonValid(e.r.Value) {
			return decodeJSON(e.r.Value), true
		}
		return decodeAll(e.r.Value), true
	}
	return e.activation.ResolveName(name)
}

func (e *eager) Parent() interpreter.Activation { return nil }

func jsonValid(b []byte) bool { _, isErr := decodeJSON(b).(*types.Err); return !isErr }

func TestInPlaceJSONAgreesWithDecoding(t *testing.T) {
	values := []string{
		`{"engine":{"rpm":3500,"id":2,"on":true,"name":"m\u00e9","tags":["a","b",{"x":1}]},"engine ":1,"n":null}`,
		`{"a":1,"a":2,"b":[1,2.5,-3e2],"c":"x\"y","d":{},"e":[]}`,
		` [ {"k": "v"}, 3 , "s" ] `,
		`"just a string"`,
		`42.5`,
		`true`,
		`null`,
		`{"deep":{"er":{"est":[[[1]]]}}}`,
		`not json`,
		`{"unterminated":`,
		``,
	}
	exprs := []string{
		`value.engine.rpm > 3000`,
		`value.engine.id == 2 && value.engine.on`,
		`value.engine.name == "mé"`,
		`value.engine.tags[1] == "b" && value.engine.tags[2].x == 1`,
		`value.engine.tags.exists(t, t == "a")`,
		`size(value.engine.tags) == 3 && size(value.engine) == 5`,
		`has(value.engine.rpm) && !has(value.engine.temp)`,
		`"rpm" in value.engine`,
		`value.a == 2`,
		`value.b[2] < 0 && value.b == [1, 2.5, -300]`,
		`value.c == "x\"y" && value.d == {} && value.e == []`,
		`value[0].k == "v" && value[1] == 3 && size(value) == 3`,
		`value == "just a string"`,
		`value > 40`,
		`value == true`,
		`value == null`,
		`value.deep.er.est[0][0][0] == 1`,
		`value.n == null`,
		`value.missing == 1`,
		`value["engine "] == 1`,
		`value.engine.tags.map(t, type(t) == string).size() == 3`,
		`value.engine == {"rpm": 3500, "id": 2, "on": true, "name": "mé", "tags": ["a", "b", {"x": 1}]}`,
		`value.b.all(x, x < 3)`,
		`type(value) == map || type(value) == list`,
	}
	for _, src := range exprs {
		f, err := Compile(src)
		if err != nil {
			t.Fatalf("Compile(%s): %v", src, err)
		}
		for _, v := range values {
			r := &Record{Value: []byte(v)}
			got, gotErr := f.Match(r)
			out, _, wantErr := f.prg.Eval(&eager{activation{r: r}})
			want := false
			if b, ok := out.(types.Bool); ok && wantErr == nil {
				want = bool(b)
			}
			if got != want || (gotErr != nil) != (wantErr != nil) {
				t.Errorf("%s on %s: in place %v (%v), decoded %v (%v)", src, v, got, gotErr, want, wantErr)
			}
		}
	}
}

// FuzzInPlaceJSON checks that reading a value in place agrees with
// decoding it whole, on any bytes.
func FuzzInPlaceJSON(f *testing.F) {
	for _, s := range []string{
		`{"engine":{"rpm":3500,"tags":["a",{"x":1}]}}`, `[1,"2",[3]]`, `{"a":1,"a":{"b":2}}`,
		`"s\"x"`, `-0.5e3`, ` null `, `{"k\u0061":1}`, `{`, `[1,]`,
	} {
		f.Add(s)
	}
	var fs []*Filter
	for _, src := range []string{
		`value.engine.rpm > 3000`, `value.a.b == 2`, `value[0] == 1 && value[2][0] == 3`,
		`size(value) > 1`, `has(value.ka)`, `value.engine.tags.exists(t, t == "a")`,
		`value == {"a": 1}`, `value.a == 1`, `type(value) == string && value.startsWith("s")`,
	} {
		flt, err := Compile(src)
		if err != nil {
			f.Fatal(err)
		}
		fs = append(fs, flt)
	}
	f.Fuzz(func(t *testing.T, v string) {
		for _, flt := range fs {
			r := &Record{Value: []byte(v)}
			got, gotErr := flt.Match(r)
			out, _, wantErr := flt.prg.Eval(&eager{activation{r: r}})
			want := false
			if b, ok := out.(types.Bool); ok && wantErr == nil {
				want = bool(b)
			}
			if got != want || (gotErr != nil) != (wantErr != nil) {
				t.Fatalf("%s on %q: in place %v (%v), decoded %v (%v)", flt, v, got, gotErr, want, wantErr)
			}
		}
	})
}
