package topicset

import (
	"regexp"
	"strings"
	"testing"
)

func set(t *testing.T, include, exclude []string, prefix, suffix string) *Set {
	t.Helper()
	s, err := New(include, exclude, prefix, suffix)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// in is membership by the definition: prefix + t + suffix, t matched the
// regexp way.
func in(include, exclude []string, prefix, suffix, name string) bool {
	if !strings.HasPrefix(name, prefix) || !strings.HasSuffix(name, suffix) || len(name) < len(prefix)+len(suffix)+1 {
		return false
	}
	t := name[len(prefix) : len(name)-len(suffix)]
	ok := false
	for _, p := range include {
		ok = ok || regexp.MustCompile(p).MatchString(t)
	}
	for _, p := range exclude {
		ok = ok && !regexp.MustCompile(p).MatchString(t)
	}
	return ok
}

func TestCommon(t *testing.T) {
	type side struct {
		include, exclude []string
		prefix, suffix   string
	}
	tests := []struct {
		a, b side
		want string // "" = disjoint
	}{
		{side{[]string{`^orders\.`}, nil, "", ""}, side{[]string{`^payments\.`}, nil, "", ""}, ""},
		{side{[]string{`^orders\.`}, nil, "", ""}, side{[]string{`.*`}, nil, "", ""}, "orders."},
		{side{[]string{`.*`}, []string{`^orders`}, "", ""}, side{[]string{`^orders\.`}, nil, "", ""}, ""},
		{side{[]string{`.*`}, []string{`^orders$`}, "", ""}, side{[]string{`^orders`}, nil, "", ""}, "ordersa"},
		// Fan-in with {source_region}: disjoint by prefix.
		{side{[]string{`^telemetry\.`}, nil, "v7.", ""}, side{[]string{`^telemetry\.`}, nil, "v9.", ""}, ""},
		// Without it, the same names.
		{side{[]string{`^telemetry\.`}, nil, "", ""}, side{[]string{`^telemetry\.`}, nil, "", ""}, "telemetry."},
		// A prefix on one side can be part of the other's topic.
		{side{[]string{`^x$`}, nil, "v7.", ""}, side{[]string{`^v7\.`}, nil, "", ""}, "v7.x"},
		{side{[]string{`^x$`}, nil, "v7.", ""}, side{[]string{`^v7\.`}, []string{`x$`}, "", ""}, ""},
		// Suffixes, and a topic that itself ends like the suffix.
		{side{[]string{`^a`}, nil, "", ".dr"}, side{[]string{`\.dr\.dr$`}, nil, "", ""}, "a.dr.dr"},
		{side{[]string{`^a$`}, nil, "", ".dr"}, side{[]string{`^a\.dr$`}, nil, "", ""}, "a.dr"},
		{side{[]string{`^a$`}, nil, "", ".dr"}, side{[]string{`^a\.d$`}, nil, "", ""}, ""},
		// Word boundaries and alternatives.
		{side{[]string{`\bfoo\b`}, nil, "", ""}, side{[]string{`^afoo$`}, nil, "", ""}, ""},
		{side{[]string{`\bfoo\b`}, nil, "", ""}, side{[]string{`^afoo`}, nil, "", ""}, "afoo.foo"},
		{side{[]string{`\bfoo\b`}, nil, "", ""}, side{[]string{`^a\.foo`}, nil, "", ""}, "a.foo"},
		{side{[]string{`^(eu|us)\.orders$`}, nil, "", ""}, side{[]string{`^us\.`}, nil, "", ""}, "us.orders"},
	}
	for _, tt := range tests {
		a := set(t, tt.a.include, tt.a.exclude, tt.a.prefix, tt.a.suffix)
		b := set(t, tt.b.include, tt.b.exclude, tt.b.prefix, tt.b.suffix)
		got, ok, err := Common(a, b, &Budget{Steps: 100_000})
		if err != nil {
			t.Fatal(err)
		}
		if got != tt.want || ok != (tt.want != "") {
			t.Errorf("Common(%+v, %+v) = %q, %v; want %q", tt.a, tt.b, got, ok, tt.want)
		}
		if ok && (!in(tt.a.include, tt.a.exclude, tt.a.prefix, tt.a.suffix, got) || !in(tt.b.include, tt.b.exclude, tt.b.prefix, tt.b.suffix, got)) {
			t.Errorf("witness %q is not in both sets", got)
		}
	}
}

func TestLengths(t *testing.T) {
	long := strings.Repeat("x", 240)
	s := set(t, []string{`^` + long + `$`}, nil, "region-seven.", "")
	if name, ok, err := s.Shortest(&Budget{Steps: 100_000}); err != nil || ok {
		t.Errorf("Shortest = %d chars, %v, %v; want none within Kafka's limit", len(name), ok, err)
	}
	if name, ok, err := set(t, []string{`^` + long + `$`}, nil, "", "").Shortest(&Budget{Steps: 100_000}); err != nil || !ok || len(name) != 240 {
		t.Errorf("Shortest source topic = %d chars, %v, %v; want 240", len(name), ok, err)
	}
	for _, tt := range []struct {
		include []string
		prefix  string
		want    int // -1: empty; 0: unbounded
	}{
		{[]string{`^orders\.`}, "hq.", 0},
		{[]string{`^(eu|us)\.orders$`, `^audit$`}, "hq.", 12},
		{[]string{`^(eu|us)\.orders$`, `^a{1,20}$`}, "", 20},
		{[]string{`^x{300}$`}, "", 300}, // longer than Kafka allows: the caller decides
		{[]string{`^a`}, "", 0},
	} {
		n, bounded, err := set(t, tt.include, nil, tt.prefix, "").Longest(&Budget{Steps: 100_000})
		if err != nil || (tt.want == 0) == bounded || bounded && n != tt.want {
			t.Errorf("Longest(%q, prefix %q) = %d, %v, %v; want %d", tt.include, tt.prefix, n, bounded, err, tt.want)
		}
	}
	if _, ok, _ := set(t, []string{`^a`}, []string{`.*`}, "", "").Shortest(&Budget{Steps: 100_000}); ok {
		t.Error("a set whose exclude takes everything is not empty")
	}
}

func TestBudget(t *testing.T) {
	a := set(t, []string{`^[a-z]{100}$`}, nil, "", "")
	b := set(t, []string{`^[a-z]{99}x$`}, []string{`q`}, "", "")
	if _, _, err := Common(a, b, &Budget{Steps: 50}); err != ErrUndecided {
		t.Errorf("Common with a budget of 50 states: %v, want ErrUndecided", err)
	}
	bud := &Budget{Steps: 10_000}
	if name, ok, err := Common(a, b, bud); err != nil || !ok || len(name) != 100 || bud.Steps >= 10_000 {
		t.Errorf("Common = %q, %v, %v (budget left %d)", name, ok, err, bud.Steps)
	}
}

// FuzzCommon checks Common against the definition: a witness is in both
// sets (regexp.MatchString on the topic inside the rename), and sets that
// share a short name are not reported disjoint.
func FuzzCommon(f *testing.F) {
	f.Add(`^orders\.`, `.*`, `^orders$`, "", "v7.", "")
	f.Add(`\bfoo\b`, `^a\.foo`, ``, "", "", "")
	f.Add(`^a`, `\.dr\.dr$`, ``, ".dr", "", "")
	f.Add(`^(eu|us)\.x$`, `^us`, `x$`, "", "", "")
	f.Fuzz(func(t *testing.T, incA, incB, excB, sufA, preB, sufB string) {
		if len(incA)+len(incB)+len(excB) > 64 || len(sufA) > 8 || len(preB) > 8 || len(sufB) > 8 {
			return
		}
		for _, p := range []string{incA, incB, excB} {
			if _, err := regexp.Compile(p); err != nil {
				return
			}
		}
		for _, l := range []string{sufA, preB, sufB} {
			if strings.Trim(l, Alphabet) != "" {
				return
			}
		}
		var exc []string
		if excB != "" {
			exc = []string{excB}
		}
		a, err := New([]string{incA}, nil, "", sufA)
		if err != nil {
			return
		}
		b, err := New([]string{incB}, exc, preB, sufB)
		if err != nil {
			return
		}
		name, ok, err := Common(a, b, &Budget{Steps: 20_000})
		if err != nil {
			return
		}
		if ok && (!in([]string{incA}, nil, "", sufA, name) || !in([]string{incB}, exc, preB, sufB, name)) {
			t.Fatalf("witness %q is not in both sets", name)
		}
		if !ok {
			// Names of up to 3 characters after the prefix: none may be
			// in both.
			const probe = "ab.x_-"
			var try func(s string, n int)
			try = func(s string, n int) {
				if in([]string{incA}, nil, "", sufA, s) && in([]string{incB}, exc, preB, sufB, s) {
					t.Fatalf("%q is in both sets, but Common found none", s)
				}
				if n == 0 {
					return
				}
				for i := range len(probe) {
					try(s+probe[i:i+1], n-1)
				}
			}
			try(preB, 3)
		}
	})
}
