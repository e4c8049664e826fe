package membership

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/internal/alloctest"
)

var sampleHealth = Health{Gateway: "v7-a", Incarnation: 1796400000000, Seq: 42, Legs: []LegHealth{
	{Leg: "ship-to-hq", Peer: "hq-a", Up: true, RTT: 612 * time.Millisecond, Loss: 0.0125, Goodput: 8_980_000, Backlog: 1 << 20},
	{Leg: "hq-to-ship", Peer: "hq-b", Up: false},
}}

func TestHealthRoundTrip(t *testing.T) {
	b, err := sampleHealth.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 80 {
		t.Errorf("two legs take %d bytes; want them compact (at most 80)", len(b))
	}
	got, err := DecodeHealth(b)
	if err != nil || !reflect.DeepEqual(got, sampleHealth) {
		t.Errorf("round trip: %+v, %v\nwant %+v", got, err, sampleHealth)
	}
	big := Health{Gateway: "g"}
	for range 65 {
		big.Legs = append(big.Legs, LegHealth{Leg: "l", Peer: "p"})
	}
	if _, err := big.Encode(); err == nil {
		t.Error("65 legs encoded")
	}
	long := Health{Gateway: "g", Legs: []LegHealth{{Leg: strings.Repeat("l", 100), Peer: strings.Repeat("p", 100)}}}
	for range 5 {
		long.Legs = append(long.Legs, long.Legs[0])
	}
	if _, err := long.Encode(); err == nil {
		t.Error("a report over HealthMax encoded")
	}
}

func TestDecodeHealthBad(t *testing.T) {
	good := sampleHealth.Append(nil)
	for name, b := range map[string][]byte{
		"empty":        nil,
		"wrong kind":   append([]byte{'X'}, good[1:]...),
		"truncated":    good[:len(good)-1],
		"huge count":   {msgHealth, 1, 1, 'g', 0, 0, 0xff, 0xff, 0x03},
		"loss over 1":  (&Health{Gateway: "g", Legs: []LegHealth{{Leg: "l", Peer: "p"}}}).Append(nil)[:0],
		"over the max": bytes.Repeat([]byte{msgHealth}, HealthMax+1),
	} {
		if name == "loss over 1" {
			b = []byte{msgHealth, 1, 1, 'g', 0, 0, 1, 1, 'l', 1, 'p', 0, 0, 0xa0, 0x9c, 0x01, 0, 0} // loss 20000
		}
		if _, err := DecodeHealth(b); !errors.Is(err, ErrHealth) {
			t.Errorf("%s: %v, want ErrHealth", name, err)
		}
	}
}

// FuzzDecodeHealth: any input decodes or fails with ErrHealth, never
// panics, allocates a bounded amount, and a decoded report re-encodes to
// the same report.
func FuzzDecodeHealth(f *testing.F) {
	f.Add(sampleHealth.Append(nil))
	f.Add((&Health{Gateway: "g"}).Append(nil))
	f.Add([]byte{msgHealth, 1, 1, 'g', 0, 0, 0x40})
	f.Add([]byte{msgHealth, 2, 1, 'g', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0, 1, 1, 'l', 1, 'p', 1, 0xff, 0xff, 0x7f, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		var h Health
		var err error
		// Names and legs, each bounded by the input: a leg struct is 88
		// bytes for at least 8 input bytes. 64 KiB slack for the engine.
		alloctest.Check(t, "DecodeHealth", uint64(16*len(data))+64<<10, func() { h, err = DecodeHealth(data) })
		if err != nil {
			if !errors.Is(err, ErrHealth) {
				t.Fatalf("error %v does not wrap ErrHealth", err)
			}
			return
		}
		again, err := DecodeHealth(h.Append(nil))
		if err != nil || !reflect.DeepEqual(again, h) {
			t.Fatalf("re-encoding %+v: %+v, %v", h, again, err)
		}
	})
}
