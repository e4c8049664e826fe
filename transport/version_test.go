package transport_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/meridian-gw/meridian/transport"
	"github.com/meridian-gw/meridian/transport/transporttest"
)

// versionDecoder returns a decoder set to protocol version v.
func versionDecoder(t testing.TB, v uint16) *transport.Decoder {
	t.Helper()
	d := transport.NewDecoder(transport.Limits{})
	if err := d.SetVersion(v); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

// Every frame type decodes on a session of the version that introduced it
// or later, and is malformed, with an error naming both versions, on an
// earlier one.
func TestDecoderChecksFrameVersion(t *testing.T) {
	rng := transporttest.NewRand(11)
	enc := newEncoder(t, transport.CodecZstd)
	for _, ft := range transporttest.FrameTypes {
		buf, err := enc.AppendFrame(nil, transporttest.RandomFrame(rng, ft))
		if err != nil {
			t.Fatal(err)
		}
		for v := transport.VersionMin; v <= transport.VersionMax; v++ {
			f, err := readOne(t, versionDecoder(t, v), buf)
			if ft.Since() <= v {
				if err != nil {
					t.Errorf("%s at version %d: %v", ft, v, err)
				}
				continue
			}
			want := fmt.Sprintf("%s frame needs protocol version %d; the session speaks version %d", ft, ft.Since(), v)
			if !errors.Is(err, transport.ErrMalformed) || !strings.Contains(err.Error(), want) {
				t.Errorf("%s at version %d: got %v, %v; want an error wrapping ErrMalformed containing %q", ft, v, f, err, want)
			}
		}
	}
}

// A Batch whose codec byte has the Kafka bit (0x10) is malformed on a
// session below VersionKafkaBatches, whatever the codec, and never decoded.
func TestDecoderChecksKafkaBit(t *testing.T) {
	rng := transporttest.NewRand(12)
	for _, compressed := range []bool{false, true} {
		kafka := transporttest.KafkaBatches(rng, 2, 1<<10, compressed)
		for _, c := range codecs {
			buf, err := newEncoder(t, c).AppendFrame(nil, kafkaBatch(kafka))
			if err != nil {
				t.Fatal(err)
			}
			for v := transport.VersionMin; v < transport.VersionKafkaBatches; v++ {
				f, err := readOne(t, versionDecoder(t, v), buf)
				want := fmt.Sprintf("Kafka record batches (bit 0x10) need protocol version %d; the session speaks version %d", transport.VersionKafkaBatches, v)
				if f != nil || !errors.Is(err, transport.ErrMalformed) || !strings.Contains(err.Error(), want) {
					t.Fatalf("%s, compressed=%v, version %d: got %v, %v; want an error containing %q", c, compressed, v, f, err, want)
				}
			}
			if _, err := readOne(t, versionDecoder(t, transport.VersionKafkaBatches), buf); err != nil {
				t.Fatalf("%s, compressed=%v, version %d: %v", c, compressed, transport.VersionKafkaBatches, err)
			}
		}
	}
}

// A Decoder without SetVersion reads VersionMax; SetVersion refuses
// versions this build does not speak and keeps the old one.
func TestDecoderSetVersion(t *testing.T) {
	d := transport.NewDecoder(transport.Limits{})
	if got := d.Version(); got != transport.VersionMax {
		t.Fatalf("Version of a new decoder: got %d, want %d", got, transport.VersionMax)
	}
	if err := d.SetVersion(transport.VersionMin); err != nil {
		t.Fatal(err)
	}
	for _, v := range []uint16{0, transport.VersionMax + 1} {
		if err := d.SetVersion(v); err == nil {
			t.Fatalf("SetVersion(%d): got no error", v)
		}
	}
	if got := d.Version(); got != transport.VersionMin {
		t.Fatalf("Version after refused SetVersion: got %d, want %d", got, transport.VersionMin)
	}
}

func TestCheckVersion(t *testing.T) {
	rng := transporttest.NewRand(13)
	kb := kafkaBatch(transporttest.KafkaBatches(rng, 1, 256, false))
	for _, tc := range []struct {
		f    transport.Frame
		v    uint16
		want string // "" for no error
	}{
		{&transport.Ack{}, 1, ""},
		{&transport.Dict{ID: 1}, 1, "dict frame needs protocol version 2; the session speaks version 1"},
		{&transport.DictAck{ID: 1}, 2, ""},
		{&transport.Batch{}, 1, ""},
		{kb, 2, "batch of Kafka record batches needs protocol version 3; the session speaks version 2"},
		{kb, 3, ""},
	} {
		err := transport.CheckVersion(tc.f, tc.v)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("CheckVersion(%T, %d): %v", tc.f, tc.v, err)
		case tc.want != "" && (err == nil || err.Error() != tc.want):
			t.Errorf("CheckVersion(%T, %d): got %v, want %q", tc.f, tc.v, err, tc.want)
		}
	}
}

// Version 4 appends Hello.Receive, RecvWindow and RecvMaxBatchBytes, and
// Welcome.Send: they round-trip, a Hello without them encodes as before
// (so a v3 listener reads it), and a Welcome below version 4 carries no
// Send list (a v3 dialer refuses bytes left over in a Welcome).
func TestDuplexHandshakeFields(t *testing.T) {
	plain := &transport.Hello{VersionMin: 1, VersionMax: 1, Gateway: "v7-a", Region: "v7", Legs: []string{"l1"},
		Codecs: []transport.Codec{1, 2, 0}}
	buf, err := transport.AppendFrame(nil, plain)
	if err != nil {
		t.Fatal(err)
	}
	if want := "011201010476372d6102763701026c3103010200"; fmt.Sprintf("%x", buf) != want {
		t.Fatalf("plain Hello: got %x, want %s (PROTOCOL.md 4.1)", buf, want)
	}
	for _, f := range []transport.Frame{
		&transport.Hello{VersionMin: 1, VersionMax: 4, Gateway: "v7-a", Region: "v7", Legs: []string{"l1"},
			Receive: []string{"cfg", "cmd"}, RecvWindow: -1, RecvMaxBatchBytes: 1 << 20},
		// Version 5 with nothing to receive: the version 4 fields are
		// written empty before Shared.
		&transport.Hello{VersionMin: 1, VersionMax: 5, Gateway: "v7-b", Region: "v7", Legs: []string{"l1", "l2"},
			Shared: []string{"l2"}},
		&transport.Welcome{Version: 4, Gateway: "hq-a", Region: "hq", Window: 1 << 20, MaxBatchBytes: 1 << 16, Send: []string{"cfg"}},
		&transport.Welcome{Version: 4, Gateway: "hq-a", Region: "hq"},
	} {
		buf, err := transport.AppendFrame(nil, f)
		if err != nil {
			t.Fatal(err)
		}
		got, err := transport.NewDecoder(transport.Limits{}).ReadHandshake(bufio.NewReader(bytes.NewReader(buf)))
		if err != nil || !reflect.DeepEqual(got, f) {
			t.Fatalf("%T: got %#v, %v; want %#v", f, got, err, f)
		}
	}
	v3 := &transport.Welcome{Version: 3, Gateway: "hq-a", Region: "hq", Send: []string{"ignored"}}
	buf, err = transport.AppendFrame(nil, v3)
	if err != nil {
		t.Fatal(err)
	}
	got, err := transport.NewDecoder(transport.Limits{}).ReadHandshake(bufio.NewReader(bytes.NewReader(buf)))
	if err != nil {
		t.Fatal(err)
	}
	if w := got.(*transport.Welcome); w.Send != nil {
		t.Fatalf("a version 3 Welcome carried Send %q", w.Send)
	}
}

// Shared legs are read only from a Hello that offers version 5: an older
// one's trailing bytes are ignored, as any later version's fields are.
func TestSharedNeedsVersion5(t *testing.T) {
	h := &transport.Hello{VersionMin: 1, VersionMax: 5, Gateway: "v7-b", Region: "v7", Legs: []string{"l1"}, Shared: []string{"l1"}}
	buf, err := transport.AppendFrame(nil, h)
	if err != nil {
		t.Fatal(err)
	}
	// Rewrite version_max (the second byte of the body) to 4.
	buf[3] = 4
	got, err := transport.NewDecoder(transport.Limits{}).ReadHandshake(bufio.NewReader(bytes.NewReader(buf)))
	if err != nil {
		t.Fatal(err)
	}
	if g := got.(*transport.Hello); g.Shared != nil || g.VersionMax != 4 {
		t.Fatalf("a Hello offering version 4 carried Shared %q (version_max %d)", g.Shared, g.VersionMax)
	}
}

// TestHelloOrigin: a relay's Hello (version 5) carries its origin after
// version 4's fields; a Hello offering at most version 4 never does, so
// an older listener reads what it always read.
func TestHelloOrigin(t *testing.T) {
	for _, tc := range []struct {
		hello *transport.Hello
		want  string
	}{
		{&transport.Hello{VersionMin: 1, VersionMax: 5, Gateway: "dr-a", Region: "dr", Legs: []string{"l"}, Origin: "v7-a"}, "v7-a"},
		{&transport.Hello{VersionMin: 1, VersionMax: 5, Gateway: "dr-a", Region: "dr", Receive: []string{"r"}, RecvWindow: 7, Origin: "v7-a"}, "v7-a"},
		{&transport.Hello{VersionMin: 1, VersionMax: 4, Gateway: "dr-a", Region: "dr", Legs: []string{"l"}, Origin: "v7-a"}, ""},
		{&transport.Hello{VersionMin: 1, VersionMax: 5, Gateway: "v7-a", Region: "v7", Legs: []string{"l"}}, ""},
	} {
		buf, err := transport.AppendFrame(nil, tc.hello)
		if err != nil {
			t.Fatal(err)
		}
		f, err := transport.NewDecoder(transport.Limits{}).ReadFrame(bufio.NewReader(bytes.NewReader(buf)))
		if err != nil {
			t.Fatal(err)
		}
		h := f.(*transport.Hello)
		if h.Origin != tc.want || !slices.Equal(h.Receive, tc.hello.Receive) || h.RecvWindow != tc.hello.RecvWindow {
			t.Errorf("Hello %+v decodes to origin %q, receive %q, window %d; want origin %q", tc.hello, h.Origin, h.Receive, h.RecvWindow, tc.want)
		}
	}
}
