package quic

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"testing/iotest"

	"github.com/meridian-gw/meridian/transport"
	"github.com/meridian-gw/meridian/transport/transporttest"

	"github.com/meridian-gw/meridian/internal/alloctest"
)

// halves returns data as a reader that yields it in two reads, split at
// the byte data[0] names, so decoders see a frame cut at any point.
func halves(data []byte) io.Reader {
	if len(data) == 0 {
		return bytes.NewReader(nil)
	}
	cut := int(data[0]) % (len(data) + 1)
	return io.MultiReader(iotest.OneByteReader(bytes.NewReader(data[:cut])), bytes.NewReader(data[cut:]))
}

// FuzzSeqLane decodes the body of a sequenced lane (after its kind byte):
// records of a uvarint sequence number and a batch frame. Any input ends in
// io.EOF, io.ErrUnexpectedEOF or an error wrapping transport.ErrMalformed,
// never a panic.
func FuzzSeqLane(f *testing.F) {
	rng := transporttest.NewRand(1)
	enc, err := transport.NewEncoder(transport.CodecZstd)
	if err != nil {
		f.Fatal(err)
	}
	var lane []byte
	for seq := range uint64(3) {
		lane = binary.AppendUvarint(lane, seq<<20)
		if lane, err = enc.AppendFrame(lane, transporttest.JSONBatch(rng, "leg", "t", 1, seq, 0, 2000)); err != nil {
			f.Fatal(err)
		}
	}
	f.Add(lane)
	f.Add(lane[:len(lane)/2])
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02})
	f.Add([]byte{0x05})
	f.Fuzz(func(t *testing.T, data []byte) {
		br := bufio.NewReader(halves(data))
		dec := transport.NewDecoder(transport.Limits{MaxBatchBytes: 1 << 20})
		defer dec.Close()
		for range 100 {
			var fr transport.Frame
			var err error
			// At most 4 times the batch limit per frame, plus the
			// decoder's zstd state.
			alloctest.Check(t, "readSeqFrame", 4<<20+8<<20+uint64(64*len(data)), func() { _, fr, err = readSeqFrame(br, dec) })
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, transport.ErrMalformed) {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if fr == nil {
				t.Fatal("nil frame without an error")
			}
		}
	})
}

// FuzzJoin decodes a join stream's message.
func FuzzJoin(f *testing.F) {
	msg := append([]byte{streamKindJoin}, bytes.Repeat([]byte{7}, 32)...)
	f.Add(binary.AppendUvarint(bytes.Clone(msg), 3))
	f.Add(binary.AppendUvarint(bytes.Clone(msg), 0))
	f.Add(binary.AppendUvarint(bytes.Clone(msg), 1<<40))
	f.Add(msg[:20])
	f.Fuzz(func(t *testing.T, data []byte) {
		var token [32]byte
		var idx int
		var err error
		alloctest.Check(t, "readJoin", 64<<10, func() { token, idx, err = readJoin(bufio.NewReader(halves(data))) })
		if err != nil {
			return
		}
		if idx < 1 || idx > maxStripeIndex || data[0] != streamKindJoin || !bytes.Equal(token[:], data[1:33]) {
			t.Fatalf("accepted join %x as token %x stripe %d", data, token, idx)
		}
	})
}
