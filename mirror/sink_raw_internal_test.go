package mirror

import (
	"testing"
	"time"
)

// Only a destination whose every recent round trip was slow is slow: a busy
// CPU slows some rounds, a distant cluster all of them.
func TestRoundTimesSlow(t *testing.T) {
	var r roundTimes
	for range 3 {
		r.add(10 * time.Millisecond)
	}
	if r.slowLocked() {
		t.Fatal("slow after 3 rounds; it needs a full window")
	}
	r.add(10 * time.Millisecond)
	if !r.slowLocked() {
		t.Fatal("not slow after 4 slow rounds")
	}
	r.add(200 * time.Microsecond)
	if r.slowLocked() {
		t.Fatal("slow although a recent round was fast")
	}
	for range 4 {
		r.add(5 * time.Millisecond)
	}
	if !r.slowLocked() {
		t.Fatal("not slow once the fast round left the window")
	}
}

func TestCPUMeterMeasures(t *testing.T) {
	m := &cpuMeter{busy: -1}
	if got := m.share(); got != -1 {
		t.Fatalf("first share = %v, want -1 (no window yet)", got)
	}
	deadline := time.Now().Add(cpuWindow + 50*time.Millisecond)
	n := 0
	for time.Now().Before(deadline) {
		n++ // keep one CPU busy
	}
	got := m.share()
	if got <= 0 || got > 1.05 {
		t.Fatalf("share after a busy window = %v (n=%d), want in (0, 1]", got, n)
	}
}
