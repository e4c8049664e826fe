package mirror

import (
	"testing"
	"time"
)

// A peer's penalty starts at 1 s, doubles with each violation up to 64 s,
// and is forgotten after a quiet period: the next violation costs 1 s
// again.
func TestPenaltyDoublesAndIsForgotten(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	p := &penalties{now: func() time.Time { return now }}
	if _, ok := p.refused("gn"); ok {
		t.Fatal("a peer that never broke the protocol is refused")
	}
	want := []time.Duration{1, 2, 4, 8, 16, 32, 64, 64, 64}
	for i, w := range want {
		d := p.violated("gn")
		if d != w*time.Second {
			t.Fatalf("violation %d: refused for %v, want %v", i+1, d, w*time.Second)
		}
		if left, ok := p.refused("gn"); !ok || left != d {
			t.Fatalf("violation %d: right after it refused=%v for %v, want refused for %v", i+1, ok, left, d)
		}
		if _, ok := p.refused("ge"); ok {
			t.Fatalf("violation %d by gn: another peer is refused", i+1)
		}
		now = now.Add(d - time.Millisecond)
		if _, ok := p.refused("gn"); !ok {
			t.Fatalf("violation %d: accepted again before its %v ended", i+1, d)
		}
		now = now.Add(time.Millisecond)
		if _, ok := p.refused("gn"); ok {
			t.Fatalf("violation %d: still refused after its %v", i+1, d)
		}
	}
	// Quiet for almost the forget period: the record stays.
	now = now.Add(penaltyForget - 65*time.Second)
	if d := p.violated("gn"); d != penaltyMost {
		t.Fatalf("violation after a short quiet: %v, want still %v", d, penaltyMost)
	}
	now = now.Add(penaltyForget)
	if _, ok := p.refused("gn"); ok {
		t.Fatal("refused after the quiet period")
	}
	if d := p.violated("gn"); d != penaltyFirst {
		t.Fatalf("first violation after the quiet period: %v, want %v", d, penaltyFirst)
	}
	// Quiet peers are dropped from the map when another violates.
	now = now.Add(penaltyForget)
	p.violated("ge")
	if _, ok := p.peers["gn"]; ok || len(p.peers) != 1 {
		t.Fatalf("penalties kept %d peers, want only the one that just violated", len(p.peers))
	}
}
