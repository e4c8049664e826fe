package filter

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func rec(sev string, value string) *Record {
	r := &Record{Topic: "telemetry.engine", Partition: 3, Key: []byte("engine-1"),
		Timestamp: time.UnixMilli(1_780_000_000_000), Value: []byte(value)}
	if sev != "" {
		r.Headers = []Header{{"source", []byte("plc-3")}, {"severity", []byte(sev)}, {"severity", []byte("shadowed")}}
	}
	return r
}

const issueFilter = `headers["severity"] in ["alarm", "critical"] && value.engine.rpm > 3000`

func TestMatch(t *testing.T) {
	tests := []struct {
		expr    string
		r       *Record
		want    bool
		wantErr bool
	}{
		{issueFilter, rec("alarm", `{"engine":{"rpm":3500}}`), true, false},
		{issueFilter, rec("critical", `{"engine":{"rpm":3000.5}}`), true, false},
		{issueFilter, rec("alarm", `{"engine":{"rpm":3000}}`), false, false},
		{issueFilter, rec("info", `{"engine":{"rpm":9000}}`), false, false},
		// The header test fails first: the value is never decoded, so a
		// non-JSON value is no error.
		{issueFilter, rec("info", `not json`), false, false},
		// Errors: no match, with the reason.
		{issueFilter, rec("alarm", `not json`), false, true},
		{issueFilter, rec("alarm", `{"engine":{}}`), false, true},
		{issueFilter, rec("", `{"engine":{"rpm":9000}}`), false, true},
		{`value.engine.rpm > 3000`, rec("alarm", `[1,2]`), false, true},
		// The first of repeated headers counts.
		{`headers["severity"] == "alarm"`, rec("alarm", ""), true, false},
		{`"severity" in headers && headers.severity == "alarm"`, rec("alarm", ""), true, false},
		{`"severity" in headers`, rec("", ""), false, false},
		{`headers[?"severity"].orValue("none") == "none"`, rec("", ""), true, false},
		{`size(headers) == 2`, rec("alarm", ""), true, false},
		{`headers.all(k, k in ["source", "severity"])`, rec("alarm", ""), true, false},
		{`key == "engine-1" && key.startsWith("engine-")`, rec("", ""), true, false},
		{`topic == "telemetry.engine" && partition == 3`, rec("", ""), true, false},
		{`timestamp > timestamp("2026-01-01T00:00:00Z")`, rec("", ""), true, false},
		{`timestamp.getFullYear() == 2026`, rec("", ""), true, false},
		{`value.id == 7 && value.name.matches("^v[0-9]+$")`, rec("", `{"id":7,"name":"v7"}`), true, false},
		{`has(value.engine) && !has(value.engine.rpm)`, rec("", `{"engine":{}}`), true, false},
		{`value.tags.exists(t, t == "b")`, rec("", `{"tags":["a","b"]}`), true, false},
	}
	for _, tt := range tests {
		f, err := Compile(tt.expr)
		if err != nil {
			t.Fatalf("Compile(%q): %v", tt.expr, err)
		}
		got, err := f.Match(tt.r)
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("%s on %q %q: %v, %v; want %v, error %v", tt.expr, tt.r.Headers, tt.r.Value, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestNotJSONError(t *testing.T) {
	f, err := Compile(`value.x == 1`)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.Match(rec("", "{"))
	if !errors.Is(err, ErrNotJSON) && !strings.Contains(fmt.Sprint(err), ErrNotJSON.Error()) {
		t.Errorf("error %v, want %v", err, ErrNotJSON)
	}
}

func TestUsesValue(t *testing.T) {
	for expr, want := range map[string]bool{
		issueFilter:                      true,
		`headers["severity"] == "alarm"`: false,
		`has(value.x)`:                   true,
		`key == "value"`:                 false,
	} {
		f, err := Compile(expr)
		if err != nil {
			t.Fatal(err)
		}
		if f.UsesValue() != want {
			t.Errorf("UsesValue(%s) = %v, want %v", expr, f.UsesValue(), want)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct{ expr, want string }{
		{`headers["severity"] == `, `1:24: Syntax error:`},
		{`header["severity"] == "alarm"`, `1:1: undeclared reference to 'header'`},
		{`headers["severity"] == 3`, `1:21: found no matching overload for '_==_'`},
		{"key == \"a\" &&\n  partiton == 1", `2:3: undeclared reference to 'partiton'`},
		{`topic`, `1:1: filter must be a boolean expression, but this one is of type string`},
		{`   `, `1:1: empty filter`},
		{strings.Repeat("a", MaxLen+1), `1:1: filter is 4097 bytes long`},
	}
	for _, tt := range tests {
		_, err := Compile(tt.expr)
		var es Errors
		if !errors.As(err, &es) {
			t.Errorf("Compile(%q) = %v, want Errors", tt.expr, err)
			continue
		}
		if !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("Compile(%q) = %q, want prefix %q", tt.expr, err, tt.want)
		}
	}
}

// A filter whose comprehensions would run long on a record fails on it.
func TestCostLimit(t *testing.T) {
	f, err := Compile(`value.xs.all(a, value.xs.all(b, value.xs.all(c, a + b + c >= 0)))`)
	if err != nil {
		t.Fatal(err)
	}
	big := []byte(`{"xs":[` + strings.Repeat("1,", 199) + `1]}`)
	if ok, err := f.Match(&Record{Value: big}); ok || err == nil || !strings.Contains(err.Error(), "cost") {
		t.Errorf("Match on 200^3 steps = %v, %v; want no match with a cost error", ok, err)
	}
	if ok, err := f.Match(&Record{Value: []byte(`{"xs":[1,2,3]}`)}); !ok || err != nil {
		t.Errorf("Match on 3^3 steps = %v, %v; want a match", ok, err)
	}
}
