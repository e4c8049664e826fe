package membership

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/meridian-gw/meridian/internal/alloctest"
)

var sampleMeta = Meta{Region: "vessel-7", Gateway: "v7-a", Incarnation: 1796400000000,
	Caps: CapQUICGossip | CapStripes | CapDialOut, ProtoMin: 1, ProtoMax: 4}

func TestMetaRoundTrip(t *testing.T) {
	for _, m := range []Meta{sampleMeta, {Region: "r", Gateway: "g", Leaving: true, Caps: 1 << 40}} {
		b, err := m.Encode()
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeMeta(b)
		if err != nil || got != m {
			t.Errorf("round trip of %+v: %+v, %v", m, got, err)
		}
	}
	b, _ := sampleMeta.Encode()
	if len(b) > 40 {
		t.Errorf("sample metadata is %d bytes; want it compact (at most 40)", len(b))
	}
	// A later format appends fields: they are ignored.
	b[0] = 2
	if got, err := DecodeMeta(append(b, 0x7f, 0x01)); err != nil || got != sampleMeta {
		t.Errorf("format 2 with a trailing field: %+v, %v", got, err)
	}
}

func TestMetaTooBig(t *testing.T) {
	m := Meta{Region: strings.Repeat("r", 300), Gateway: "far-" + strings.Repeat("g", 300)}
	_, err := m.Encode()
	if !errors.Is(err, ErrMetaTooBig) || !strings.Contains(err.Error(), "gateway far-") {
		t.Fatalf("Encode of 600 bytes of names: %v", err)
	}
}

func TestDecodeMetaBad(t *testing.T) {
	good := sampleMeta.Append(nil)
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"format 0", append([]byte{0}, good[1:]...)},
		{"truncated", good[:len(good)-1]},
		{"name past the end", []byte{1, 0, 50, 'a'}},
		{"empty region", []byte{1, 0, 0, 1, 'g', 0, 0, 0, 0}},
		{"control byte in a name", []byte{1, 0, 1, '\n', 1, 'g', 0, 0, 0, 0}},
		{"protocol min above max", (&Meta{Region: "r", Gateway: "g", ProtoMin: 3, ProtoMax: 2}).Append(nil)},
		{"protocol out of range", []byte{1, 0, 1, 'r', 1, 'g', 0, 0, 0xff, 0xff, 0x7f, 1}},
		{"over 512 bytes", bytes.Repeat([]byte{1}, MetaMax+1)},
	} {
		if _, err := DecodeMeta(tc.b); !errors.Is(err, ErrMeta) {
			t.Errorf("%s: err %v, want ErrMeta", tc.name, err)
		}
	}
}

func TestCapsString(t *testing.T) {
	if s := (CapQUICGossip | CapDialOut | 1<<20).String(); s != "quic-gossip,dial-out,0x100000" {
		t.Errorf("Caps.String = %q", s)
	}
	if s := Caps(0).String(); s != "none" {
		t.Errorf("Caps(0).String = %q", s)
	}
}

// FuzzDecodeMeta: any input decodes or fails with ErrMeta, never panics,
// allocates at most the input's size plus a little, and what decodes
// encodes back to the same fields.
func FuzzDecodeMeta(f *testing.F) {
	f.Add(sampleMeta.Append(nil))
	f.Add((&Meta{Region: "r", Gateway: "g", Leaving: true}).Append(nil))
	f.Add([]byte{1, 0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01})
	f.Add([]byte{2, 0xff, 1, 'r', 1, 'g', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0, 1, 1})
	f.Add(bytes.Repeat([]byte{0x7f}, MetaMax))
	f.Fuzz(func(t *testing.T, data []byte) {
		var m Meta
		var err error
		// The names are the only allocations (plus an error): 64 KiB of
		// slack for the fuzzing engine's own goroutines.
		alloctest.Check(t, "DecodeMeta", uint64(2*len(data))+64<<10, func() { m, err = DecodeMeta(data) })
		if err != nil {
			if !errors.Is(err, ErrMeta) {
				t.Fatalf("error %v does not wrap ErrMeta", err)
			}
			return
		}
		again, err := DecodeMeta(m.Append(nil))
		if err != nil || again != m {
			t.Fatalf("re-encoding %+v: %+v, %v", m, again, err)
		}
	})
}
