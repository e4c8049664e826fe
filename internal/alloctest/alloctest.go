// Package alloctest measures the heap bytes a call allocates, so that tests
// and fuzz targets can hold a decoder to a ceiling: a peer's small input
// must not make the process allocate much more than the bytes it sent and
// the limits it is held to.
//
// It is for tests only: production code never imports it.
package alloctest

import (
	"runtime"
	"testing"
)

// Bytes returns the heap bytes allocated while f runs: the growth of
// runtime.MemStats.TotalAlloc, which counts every allocation whether or not
// it is freed. Allocations by other goroutines running meanwhile are
// counted too, so ceilings should leave some slack: in a fuzz worker,
// the fuzzing engine's own goroutines allocate tens of KiB at times, so
// leave 64 KiB there.
func Bytes(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// Check runs f and fails t if it allocated more than ceiling bytes, naming
// what was measured. It returns the bytes allocated.
func Check(t testing.TB, what string, ceiling uint64, f func()) uint64 {
	t.Helper()
	n := Bytes(f)
	if n > ceiling {
		t.Errorf("%s allocated %d bytes, more than the ceiling of %d", what, n, ceiling)
	}
	return n
}
