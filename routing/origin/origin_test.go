package origin

import (
	"strings"
	"testing"

	"github.com/meridian-gw/meridian/internal/alloctest"
)

func TestNext(t *testing.T) {
	long := make([]string, MaxHops)
	for i := range long {
		long[i] = "r" + string(rune('a'+i)) + "/kafka"
	}
	for _, tc := range []struct {
		name    string
		v       string
		present bool
		want    string
		verdict Verdict
	}{
		{"local", "", false, "hq/kafka,dr/kafka", Local},
		{"extend", "ship/kafka,hq/kafka", true, "ship/kafka,hq/kafka,dr/kafka", Extended},
		{"copied in, source appended", "ship/kafka", true, "ship/kafka,hq/kafka,dr/kafka", Extended},
		{"back to dr", "dr/kafka,hq/kafka", true, "", Loop},
		{"dr earlier on the path", "dr/kafka,x/kafka,hq/kafka", true, "", Loop},
		{"at MaxHops", strings.Join(long, ","), true, "", Loop},
		{"one short of MaxHops, source missing", strings.Join(long[:MaxHops-1], ","), true, "", Loop},
		{"one short of MaxHops, source last", strings.Join(append(long[:MaxHops-2:MaxHops-2], "hq/kafka"), ","), true,
			strings.Join(append(long[:MaxHops-2:MaxHops-2], "hq/kafka", "dr/kafka"), ","), Extended},
		{"empty value", "", true, "hq/kafka,dr/kafka", Malformed},
		{"garbage", "\x00\xff", true, "hq/kafka,dr/kafka", Malformed},
		{"no slash", "hq", true, "hq/kafka,dr/kafka", Malformed},
		{"uppercase", "HQ/kafka", true, "hq/kafka,dr/kafka", Malformed},
		{"trailing comma", "ship/kafka,", true, "hq/kafka,dr/kafka", Malformed},
		{"twice", "ship/kafka,ship/kafka", true, "hq/kafka,dr/kafka", Malformed},
		{"two slashes", "a/b/c", true, "hq/kafka,dr/kafka", Malformed},
		{"leading dash", "-a/b", true, "hq/kafka,dr/kafka", Malformed},
		{"too long", strings.Repeat("a", MaxLen) + "/b", true, "hq/kafka,dr/kafka", Malformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, verdict := Next([]byte("junk"), []byte(tc.v), tc.present, "hq/kafka", "dr/kafka")
			if verdict != tc.verdict || string(out) != tc.want {
				t.Errorf("Next(%q) = %q, %v; want %q, %v", tc.v, out, verdict, tc.want, tc.verdict)
			}
		})
	}
}

func TestPath(t *testing.T) {
	if got := Path([]byte("ship/kafka,hq/kafka")); len(got) != 2 || got[0] != "ship/kafka" || got[1] != "hq/kafka" {
		t.Errorf("Path = %q", got)
	}
	if got := Path([]byte("bad")); got != nil {
		t.Errorf("Path(bad) = %q, want nil", got)
	}
}

func TestNextAllocatesNothingWithRoom(t *testing.T) {
	buf := make([]byte, 0, 4096)
	v := []byte("ship/kafka,hq/kafka")
	if n := testing.AllocsPerRun(100, func() { Next(buf, v, true, "hq/kafka", "dr/kafka") }); n != 0 {
		t.Errorf("Next allocated %v times per run, want 0", n)
	}
}

// FuzzNext decodes arbitrary header values (split in two at a fuzzed point,
// as a header and a second reference) and checks the rule's promises: a
// value it returns is valid, keeps the origin of a valid input, names the
// destination once, and never a cluster it came back to; it allocates no
// more than its output.
func FuzzNext(f *testing.F) {
	for _, s := range []string{"", "hq/kafka", "ship/kafka,hq/kafka", "dr/kafka,hq/kafka", "a/b,", "HQ/x", ",", "a/b/c", strings.Repeat("a/b,", 20)} {
		f.Add([]byte(s), uint8(3))
	}
	f.Fuzz(func(t *testing.T, v []byte, split uint8) {
		src, dst := "hq/kafka", "dr/kafka"
		if i := int(split); i < len(v) && validRef(v[i:]) && !Contains([]byte(src), string(v[i:])) {
			// A fuzzed destination.
			dst, v = string(v[i:]), v[:i]
		}
		var out []byte
		var verdict Verdict
		n := alloctest.Check(t, "Next", 64<<10+uint64(3*len(v)), func() {
			out, verdict = Next(nil, v, true, src, dst)
		})
		_ = n
		valid := Valid(v)
		switch {
		case verdict == Loop:
			if !valid {
				t.Fatalf("Next(%q) = Loop for an invalid value", v)
			}
			if out != nil {
				t.Fatalf("Next(%q) = %q with Loop", v, out)
			}
			return
		case verdict == Malformed && valid, verdict != Malformed && !valid:
			t.Fatalf("Next(%q) = %v, Valid %v", v, verdict, valid)
		}
		if !Valid(out) || !Contains(out, dst) || !Contains(out, src) {
			t.Fatalf("Next(%q) = %q: not a valid path through %s to %s", v, out, src, dst)
		}
		p := Path(out)
		if p[len(p)-1] != dst {
			t.Fatalf("Next(%q) = %q: does not end at %s", v, out, dst)
		}
		if valid {
			if Contains(v, dst) {
				t.Fatalf("Next(%q) sent a record back to %s", v, dst)
			}
			if q := Path(v); p[0] != q[0] {
				t.Fatalf("Next(%q) = %q: origin lost", v, out)
			}
		}
	})
}

var sinkOut []byte

// BenchmarkNext is the per-record provenance work of a sender: the header
// checked and extended into a reused buffer.
func BenchmarkNext(b *testing.B) {
	for _, bc := range []struct {
		name    string
		v       string
		present bool
	}{
		{"local", "", false},
		{"one-hop", "ship/kafka,hq/kafka", true},
		{"loop", "dr/kafka,hq/kafka", true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			buf := make([]byte, 0, 64<<10)
			v := []byte(bc.v)
			b.ReportAllocs()
			for b.Loop() {
				if len(buf) > 60<<10 {
					buf = buf[:0]
				}
				sinkOut, _ = Next(buf, v, bc.present, "hq/kafka", "dr/kafka")
				buf = buf[:len(buf)+len(sinkOut)]
			}
		})
	}
}
