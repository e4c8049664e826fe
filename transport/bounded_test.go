package transport_test

import (
	"bufio"
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/klauspost/compress/s2"
	"github.com/meridian-gw/meridian/internal/alloctest"
	"github.com/meridian-gw/meridian/transport"
	"github.com/meridian-gw/meridian/transport/transporttest"
)

// hostileLimits is a small batch limit, so that what the decoder allocates
// is easy to tell from what the test itself does.
var hostileLimits = transport.Limits{MaxBatchBytes: 1 << 20}

// s2Batch is a batch frame whose record block is blk, compressed with s2:
// a repetitive block costs a peer a few dozen bytes on the wire.
func s2Batch(blk []byte) []byte {
	return batchFrame(transport.CodecS2, len(blk), s2.Encode(nil, blk))
}

type hostileFrame struct {
	name   string
	frame  []byte
	refuse bool // by hostileLimits
}

// hostileFrames are small batch frames whose record blocks declare, and
// carry, many records or headers; FuzzReadFrame seeds with them too.
func hostileFrames() []hostileFrame {
	tiny := []byte{0, 0, 1, 1, 0}                      // offset, timestamp delta 0; null key, value; no headers
	hdr := []byte{0, 1}                                // empty key, null value
	manyHdrs := append([]byte{0, 0, 1, 1}, 0x80, 0x20) // 4096 headers follow
	manyHdrs = append(manyHdrs, bytes.Repeat(hdr, 4096)...)
	tinyRecs := 200_000
	return []hostileFrame{
		// 200,000 five-byte records: 1 MB on the wire after decompression,
		// 17.6 MB as Records. Charged 32 bytes each, they are refused.
		{"tiny records", s2Batch(recordBlock(tinyRecs, bytes.Repeat(tiny, tinyRecs))), true},
		// One record with 4096 headers, then 1000 records without: the
		// header array must be sized by the headers there are, not by the
		// first record's count times the records.
		{"headers on the first record", s2Batch(recordBlock(1001, append(manyHdrs, bytes.Repeat(tiny, 1000)...))), false},
	}
}

// TestSmallFrameAllocationBounded sends hostileFrames. Each must cost the
// receiver at most 4 times its batch limit, whether it is accepted or
// refused.
func TestSmallFrameAllocationBounded(t *testing.T) {
	cases := hostileFrames()
	dec := transport.NewDecoder(hostileLimits)
	defer dec.Close()
	ceiling := uint64(4 * hostileLimits.MaxBatchBytes)
	for _, c := range cases {
		var err error
		n := alloctest.Check(t, c.name, ceiling, func() { _, err = readOne(t, dec, c.frame) })
		t.Logf("%s: a %d-byte frame allocated %d bytes (ceiling %d), err %v", c.name, len(c.frame), n, ceiling, err)
		if c.refuse != (err != nil) {
			t.Errorf("%s: got err %v, want refused %v", c.name, err, c.refuse)
		}
		if err != nil && !errors.Is(err, transport.ErrMalformed) {
			t.Errorf("%s: %v does not wrap ErrMalformed", c.name, err)
		}
	}
}

// TestReadHandshake checks that the handshake reader takes only Hello,
// Welcome and Error frames of at most MaxHandshakeBytes, and refuses the
// rest before reading their bodies.
func TestReadHandshake(t *testing.T) {
	hello := &transport.Hello{VersionMin: 1, VersionMax: transport.VersionMax, Gateway: "g", Region: "r", Legs: []string{"a"}}
	big := &transport.Hello{VersionMin: 1, VersionMax: transport.VersionMax, Gateway: "g", Region: "r"}
	for len(big.Legs)*1000 < transport.MaxHandshakeBytes {
		big.Legs = append(big.Legs, string(bytes.Repeat([]byte{'l'}, 1000)))
	}
	enc := func(f transport.Frame) []byte {
		b, err := transport.AppendFrame(nil, f)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cases := []struct {
		name string
		in   []byte
		want string // "" accepts
	}{
		{"hello", enc(hello), ""},
		{"welcome", enc(&transport.Welcome{Version: 1, Gateway: "g", Region: "r", Window: 1}), ""},
		{"error", enc(&transport.Error{Code: transport.ErrCodeLimit, Message: "no"}), ""},
		{"hello over the limit", enc(big), "exceeds the handshake limit"},
		{"ping", enc(&transport.Ping{Nonce: 1}), "during the handshake"},
		// A batch header declaring a body of 60 MiB: refused on its type.
		{"batch", []byte{byte(transport.FrameBatch), 0x80, 0x80, 0x80, 0x1e}, "during the handshake"},
	}
	for _, c := range cases {
		dec := transport.NewDecoder(transport.Limits{})
		f, err := dec.ReadHandshake(bufio.NewReader(bytes.NewReader(c.in)))
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want == "" && f == nil:
			t.Errorf("%s: no frame", c.name)
		case c.want != "" && (err == nil || !errors.Is(err, transport.ErrMalformed) || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: got %v, want a malformed-frame error containing %q", c.name, err, c.want)
		}
		dec.Close()
	}
	// ReadFrame still takes the large Hello (it is within MaxFrameBytes).
	if _, err := transport.NewDecoder(transport.Limits{}).ReadFrame(bufio.NewReader(bytes.NewReader(enc(big)))); err != nil {
		t.Errorf("ReadFrame of a %d-leg hello: %v", len(big.Legs), err)
	}
}

// TestEveryFrameTypeAllocationBounded decodes, for every frame type, 2,000
// random 64-byte frames (type byte, length 62, random body; batches also
// with each codec and a record block length at the limit) and checks the
// most any of them allocated against 4 times the batch limit.
func TestEveryFrameTypeAllocationBounded(t *testing.T) {
	rng := transporttest.NewRand(64)
	dec := transport.NewDecoder(hostileLimits)
	defer dec.Close()
	ceiling := uint64(4 * hostileLimits.MaxBatchBytes)
	for _, ft := range transporttest.FrameTypes {
		var most uint64
		for i := range 2000 {
			frame := append([]byte{byte(ft), 62}, make([]byte, 62)...)
			for j := 2; j < len(frame); j++ {
				frame[j] = byte(rng.Uint32())
			}
			if ft == transport.FrameBatch && i%2 == 0 {
				// A valid batch header, then a block declared at the limit.
				frame = batchFrame(transport.Codec(i/2%3), hostileLimits.MaxBatchBytes, frame[2:50])
			}
			n := alloctest.Bytes(func() { readOne(t, dec, frame) })
			most = max(most, n)
		}
		t.Logf("%s: a 64-byte frame allocated at most %d bytes (ceiling %d)", ft, most, ceiling)
		if most > ceiling {
			t.Errorf("%s: a small frame allocated %d bytes, more than %d", ft, most, ceiling)
		}
	}
}
