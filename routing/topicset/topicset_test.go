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
		got, ok, err := Common(a, b)
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
	if name, ok, err := s.Shortest(); err != nil || ok {
		t.Errorf("Shortest = %d chars, %v, %v; want none within Kafka's limit", len(name), ok, err)
	}
	if name, ok, err := set(t, []string{`^` + long + `$`}, nil, "", "").Shortest(); err != nil || !ok || len(name) != 240 {
		t.Errorf("Shortest source topic = %d chars, %v, %v; want 240", len(name), ok, err)
	}
	s = set(t, []string{`^orders\.`}, nil, "hq.", "")
	if _, ok, err := s.Longer(MaxLen); err != nil || ok {
		t.Errorf("Longer(MaxLen) found a name over Kafka's limit: %v %v", ok, err)
	}
	if name, ok, err := s.Longer(MaxLen - 3); err != nil || !ok || len(name) != MaxLen-2 {
		t.Errorf("Longer(%d) = %d chars, %v, %v", MaxLen-3, len(name), ok, err)
	}
	s = set(t, []string{`^(eu|us)\.orders$`}, nil, "hq.", "")
	if _, ok, err := s.Longer(20); err != nil || ok {
		t.Errorf("a finite set has a name over 20: %v %v", ok, err)
	}
	if _, ok, _ := set(t, []string{`^a`}, []string{`.*`}, "", "").Shortest(); ok {
		t.Error("a set whose exclude takes everything is not empty")
	}
}
