package progress

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/meridian-gw/meridian/internal/alloctest"
)

// randomRanges returns n ranges as a partition's mirror makes them: source
// gaps (markers, aborted or compacted records) and a destination gap after
// each transaction (its commit marker).
func randomRanges(r *rand.Rand, n int) []offRange {
	var out []offRange
	var s, d int64
	for range n {
		s += r.Int64N(3)
		d += 1 + r.Int64N(2)
		k := 1 + r.Int64N(500)
		out = append(out, offRange{s, d, k})
		s, d = s+k, d+k
	}
	return out
}

// naiveSearch is the reference: the first range whose end by key is after
// off.
func naiveSearch(rs []offRange, key int, off int64) (offRange, bool) {
	for _, x := range rs {
		if x[key]+x[2] > off {
			return x, true
		}
	}
	return offRange{}, false
}

func TestRangeSetMatchesAPlainList(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, rangeBlockLen - 1, rangeBlockLen, 3*rangeBlockLen + 17} {
		rs := randomRanges(r, n)
		// Added in several appends with overlap, as progress records repeat
		// their tails, and built from a shuffled copy with duplicates, as
		// loadState sees segments and tails.
		var live rangeSet
		for i := 0; i < len(rs); i += 7 {
			live.add(rs[max(0, i-5):min(len(rs), i+7)])
		}
		shuffled := slices.Concat(rs, rs[:n/2])
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		built := buildRangeSet(shuffled)
		for _, s := range []*rangeSet{&live, built} {
			if got := s.all(nil); !slices.Equal(got, rs) && !(len(got) == 0 && len(rs) == 0) {
				t.Fatalf("n=%d: set holds %d ranges, want %d", n, len(got), len(rs))
			}
			if s.len() != n {
				t.Fatalf("n=%d: len %d", n, s.len())
			}
			end := int64(0)
			if n > 0 {
				end = rs[n-1][1] + rs[n-1][2] + 3
			}
			for off := int64(0); off < end; off += 1 + r.Int64N(40) {
				for key := range 2 {
					w, wok := naiveSearch(rs, key, off)
					g, gok := s.search(key, off)
					if w != g || wok != gok {
						t.Fatalf("n=%d search(%d, %d) = %v %v, want %v %v", n, key, off, g, gok, w, wok)
					}
				}
			}
		}
		if n > 2*rangeBlockLen {
			per := float64(live.memBytes()) / float64(n)
			t.Logf("%d ranges: about %.1f bytes each in memory", n, per)
			cut := rs[2*rangeBlockLen][1]
			if dropped := live.pruneBelowDest(cut); dropped != 2*rangeBlockLen {
				t.Errorf("pruned %d ranges below %d, want %d", dropped, cut, 2*rangeBlockLen)
			}
			if got := live.all(nil); !slices.Equal(got, rs[2*rangeBlockLen:]) {
				t.Errorf("after pruning: %d ranges, want %d", len(got), n-2*rangeBlockLen)
			}
		}
	}
}

func TestRangesPackedJSON(t *testing.T) {
	rs := Ranges(randomRanges(rand.New(rand.NewPCG(3, 4)), 1000))
	b, err := json.Marshal(rs)
	if err != nil {
		t.Fatal(err)
	}
	var back Ranges
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(back, rs) {
		t.Fatal("ranges changed in a JSON round trip")
	}
	t.Logf("1000 ranges: %d bytes packed in JSON (%.1f per range)", len(b), float64(len(b))/1000)
	if len(b) > 8*1000 {
		t.Errorf("packed ranges take %d bytes", len(b))
	}
}

// FuzzDecodeProgress feeds arbitrary bytes to the progress record decoder,
// which reads what any client could have written to Topic.
func FuzzDecodeProgress(f *testing.F) {
	f.Add(Encode(&Record{V: Version, Leg: "r:w/k", Topic: "t", Partition: 3, Next: 10,
		Ranges: Ranges{{0, 0, 4}, {5, 5, 5}}, Seg: 2}))
	f.Add([]byte(`{"v":2,"kind":"segment","ranges":"AgIE"}`))
	f.Add([]byte(`{"v":2,"ranges":"////"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var p *Record
		var err error
		// Packed ranges take at least 3 bytes each and 24 in memory, and
		// base64 and JSON cost some more: 64 times the input is ample.
		alloctest.Check(t, "decode", uint64(64*len(b)+64<<10), func() { p, err = decode(b) })
		if err != nil {
			return
		}
		for i, r := range p.Ranges {
			if r[2] <= 0 || r[0] < 0 || r[1] < 0 || (i > 0 && r[0] < p.Ranges[i-1][0]+p.Ranges[i-1][2]) {
				t.Fatalf("decoded invalid range %v", r)
			}
		}
		var s rangeSet
		s.add(p.Ranges)
		if s.len() != len(p.Ranges) {
			t.Fatalf("set of %d ranges holds %d", len(p.Ranges), s.len())
		}
	})
}

// TestDecodeRefusesHugeValues checks that a value larger than
// MaxValueBytes is refused before it is parsed, for progress and fences.
func TestDecodeRefusesHugeValues(t *testing.T) {
	big := append([]byte(`{"v":2,"leg":"`), bytes.Repeat([]byte{'x'}, MaxValueBytes)...)
	big = append(big, `"}`...)
	if _, err := decode(big); err == nil || !strings.Contains(err.Error(), "exceeds the limit") {
		t.Errorf("decode of %d bytes: got %v, want a limit error", len(big), err)
	}
	if _, err := decodeFence(big); err == nil || !strings.Contains(err.Error(), "exceeds the limit") {
		t.Errorf("decodeFence of %d bytes: got %v, want a limit error", len(big), err)
	}
}

// FuzzDecodeFence feeds arbitrary bytes to the fence decoder, which reads
// what any client could have written to Topic: no panic, allocation
// bounded by the input, and what it accepts is a version 1 fence.
func FuzzDecodeFence(f *testing.F) {
	f.Add([]byte(`{"v":1,"kind":"fence","leg":"r:w/k","epoch":3,"reason":"failover","at":1}`))
	f.Add([]byte(`{"v":1,"kind":"fence","leg":"l","lifted":true}`))
	f.Add([]byte(`{"v":2,"kind":"fence"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var fe *Fence
		var err error
		alloctest.Check(t, "decodeFence", uint64(16*len(b)+64<<10), func() { fe, err = decodeFence(b) })
		if err != nil {
			return
		}
		if fe.V != 1 || fe.Kind != KindFence {
			t.Fatalf("accepted %+v", fe)
		}
	})
}
