package filter

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/meridian-gw/meridian/internal/alloctest"
)

// FuzzCompile checks that no expression makes Compile or Match panic,
// that every failure is Errors with positions inside the expression, and
// that compiling stays within an allocation ceiling.
func FuzzCompile(f *testing.F) {
	for _, s := range []string{
		issueFilter,
		`headers["severity"] == "alarm"`,
		`"severity" in headers && headers[?"x"].orValue("") == ""`,
		`key.startsWith("engine-") || topic.matches("^telemetry\\.")`,
		`timestamp > timestamp("2026-01-01T00:00:00Z") && partition % 2 == 0`,
		`value.tags.exists(t, t == "b") && has(value.engine.rpm)`,
		`value.a.b.c.d.e.f == [1, 2.5, "x", {"k": null}]`,
		"key == \"a\" &&\n  partiton == 1",
		`headers["severity"] == `,
		`((((((((((1))))))))))`,
		`[1,2,3].map(x, [x, x]).size() > 0`,
		`"\u00e9" == key`,
	} {
		f.Add(s)
	}
	records := []*Record{
		rec("alarm", `{"engine":{"rpm":3500},"tags":["a","b"]}`),
		rec("", `not json`),
		rec("info", ``),
	}
	f.Fuzz(func(t *testing.T, src string) {
		var flt *Filter
		var err error
		// CEL's parser and checker allocate some KiB per character of a
		// deeply nested expression; MaxLen bounds the input.
		alloctest.Check(t, "Compile", uint64(8<<20+4096*len(src)), func() { flt, err = Compile(src) })
		if err != nil {
			if flt != nil {
				t.Fatal("a *Filter with an error")
			}
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("error is %T, want Errors: %v", err, err)
			}
			lines := strings.Split(src, "\n")
			for _, e := range es {
				if e.Line < 1 || e.Col < 1 || e.Reason == "" || strings.Contains(e.Reason, "\n") {
					t.Fatalf("bad error %q", e.Error())
				}
				if utf8.ValidString(src) && len(src) <= MaxLen && e.Line > len(lines) {
					t.Fatalf("error %q on line %d of %d", e.Error(), e.Line, len(lines))
				}
			}
			return
		}
		for _, r := range records {
			flt.Match(r) // must not panic; errors are no match
		}
	})
}
