package lab

import (
	"slices"
	"testing"
)

func TestQuantile(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3, 6, 7, 8, 9, 10}
	for _, c := range []struct{ q, want float64 }{{0.5, 5}, {0.99, 10}, {1, 10}, {0.1, 1}, {0, 1}} {
		if got := quantile(xs, c.q); got != c.want {
			t.Errorf("quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
}

func TestParseOffKey(t *testing.T) {
	for _, c := range []struct {
		key     string
		p       int32
		seq     int64
		wantsOK bool
	}{{"p3-1234", 3, 1234, true}, {"p0-0", 0, 0, true}, {"x3-1", 0, 0, false}, {"p3", 0, 0, false}, {"p-1", 0, 0, false}} {
		p, seq, ok := parseOffKey([]byte(c.key))
		if ok != c.wantsOK || ok && (p != c.p || seq != c.seq) {
			t.Errorf("parseOffKey(%q) = %d, %d, %v; want %d, %d, %v", c.key, p, seq, ok, c.p, c.seq, c.wantsOK)
		}
	}
}

func TestRotate(t *testing.T) {
	s := []string{"a", "b", "c"}
	if got := rotate(s, 1); !slices.Equal(got, []string{"b", "c", "a"}) {
		t.Errorf("rotate 1 = %v", got)
	}
	if got := rotate(s, 3); !slices.Equal(got, s) {
		t.Errorf("rotate 3 = %v", got)
	}
}
