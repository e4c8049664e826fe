package alloctest

import "testing"

var sink []byte

func TestBytesCountsAllocations(t *testing.T) {
	n := Bytes(func() { sink = make([]byte, 1<<20) })
	if n < 1<<20 {
		t.Fatalf("a 1 MiB allocation measured as %d bytes", n)
	}
	if n > 2<<20 {
		t.Fatalf("a 1 MiB allocation measured as %d bytes, more than twice", n)
	}
}

func TestCheckFailsOverCeiling(t *testing.T) {
	ft := &testing.T{}
	var rec fakeTB
	rec.TB = ft
	Check(&rec, "make", 1<<10, func() { sink = make([]byte, 1<<20) })
	if !rec.failed {
		t.Fatal("a 1 MiB allocation passed a 1 KiB ceiling")
	}
	rec.failed = false
	Check(&rec, "nothing", 1<<20, func() {})
	if rec.failed {
		t.Fatal("no allocation failed a 1 MiB ceiling")
	}
}

type fakeTB struct {
	testing.TB
	failed bool
}

func (f *fakeTB) Helper()                        {}
func (f *fakeTB) Errorf(format string, a ...any) { f.failed = true }
