package transport_test

import (
	"bufio"
	"bytes"
	"io"
	"testing"

	"github.com/meridian-gw/meridian/internal/alloctest"
	"github.com/meridian-gw/meridian/transport"
	"github.com/meridian-gw/meridian/transport/transporttest"
)

// fuzzLimits are small so that the fuzzer reaches every limit.
var fuzzLimits = transport.Limits{MaxFrameBytes: 1 << 20, MaxBatchBytes: 1 << 20, MaxRecords: 1000, MaxHeaders: 50}

// chunkedReader returns its parts in order, at most max bytes per Read, never
// merging two parts: it models a stream whose bytes arrive in pieces.
type chunkedReader struct {
	parts [][]byte
	max   int
}

func (r *chunkedReader) Read(p []byte) (int, error) {
	for len(r.parts) > 0 && len(r.parts[0]) == 0 {
		r.parts = r.parts[1:]
	}
	if len(r.parts) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), r.max)], r.parts[0])
	r.parts[0] = r.parts[0][n:]
	return n, nil
}

type decoded struct {
	frames []transport.Frame
	err    error
}

// decodeStream decodes frames until an error. Decoders are reused across
// inputs (their zstd state is expensive to create), which also checks that a
// failed frame leaves no state behind that changes the next decode.
func decodeStream(dec *transport.Decoder, r io.Reader) decoded {
	br := bufio.NewReaderSize(r, 16)
	var out decoded
	for {
		f, err := dec.ReadFrame(br)
		if err != nil {
			out.err = err
			return out
		}
		out.frames = append(out.frames, f)
	}
}

// checkFuzzAllocs runs decode and fails t if it allocated more than 4
// times the batch limit for each frame it decoded (and the error at the
// end), plus 64 bytes per input byte (a list of one-byte elements) and the
// decoder's first zstd state: the target for any small frame.
func checkFuzzAllocs(t *testing.T, decode func(), data []byte, out *decoded) {
	t.Helper()
	n := alloctest.Bytes(decode)
	ceiling := uint64(4*fuzzLimits.MaxBatchBytes*(len(out.frames)+1) + 64*len(data) + 8<<20)
	if n > ceiling {
		t.Fatalf("decoding %d bytes (%d frames, then %v) allocated %d bytes, more than %d", len(data), len(out.frames), out.err, n, ceiling)
	}
}

// fuzzVersion maps a fuzzed number onto the versions this build speaks
// (each of them onto itself), so that every input is decoded at some real
// session version.
func fuzzVersion(v uint16) uint16 {
	if v >= transport.VersionMin && v <= transport.VersionMax {
		return v
	}
	return transport.VersionMin + v%(transport.VersionMax-transport.VersionMin+1)
}

// FuzzReadFrame feeds arbitrary bytes to the frame decoder, set to a fuzzed
// session version. Seeds are valid encodings of every frame type with every
// codec, alone and concatenated, at the newest version, and each of them
// again at every older version. Properties: no panic; the same frames and
// error whether the input arrives whole or split in two halves read a few
// bytes at a time (as in nats-server parser_fuzz_test.go); no decoded frame
// needs a later version than the session's; and every decoded frame
// survives a re-encode with each codec unchanged.
func FuzzReadFrame(f *testing.F) {
	rng := transporttest.NewRand(42)
	var seeds [][]byte
	add := func(buf []byte) {
		f.Add(transport.VersionMax, buf)
		seeds = append(seeds, buf)
	}
	for _, c := range codecs {
		enc := newEncoder(f, c)
		var all []byte
		for _, ft := range transporttest.FrameTypes {
			buf, err := enc.AppendFrame(nil, transporttest.RandomFrame(rng, ft))
			if err != nil {
				f.Fatal(err)
			}
			add(buf)
			all = append(all, buf...)
		}
		add(all)
		buf, err := enc.AppendFrame(nil, transporttest.JSONBatch(rng, "leg", "events", 0, 1, 0, 8<<10))
		if err != nil {
			f.Fatal(err)
		}
		add(buf)
		for _, compressed := range []bool{false, true} {
			buf, err := enc.AppendFrame(nil, kafkaBatch(transporttest.KafkaBatches(rng, 3, 1<<10, compressed)))
			if err != nil {
				f.Fatal(err)
			}
			add(buf)
		}
		if c == transport.CodecZstd {
			// A real dictionary, then a batch compressed with it (which
			// the fuzz decoder, holding no dictionaries, must reject).
			send, _, d := trainDicts(f, "leg", "events")
			denc, err := transport.NewEncoderOptions(c, transport.EncoderOptions{Dicts: send})
			if err != nil {
				f.Fatal(err)
			}
			dbuf, err := transport.AppendFrame(nil, d)
			if err != nil {
				f.Fatal(err)
			}
			add(dbuf)
			dbuf, err = denc.AppendFrame(dbuf, transporttest.JSONBatch(rng, "leg", "events", 0, 1, 0, 4<<10))
			if err != nil {
				f.Fatal(err)
			}
			add(dbuf)
		}
	}
	for _, h := range hostileFrames() {
		add(h.frame)
	}
	for v := transport.VersionMin; v < transport.VersionMax; v++ {
		for _, buf := range seeds {
			f.Add(v, buf)
		}
	}
	encs := make([]*transport.Encoder, len(codecs))
	for i, c := range codecs {
		encs[i] = newEncoder(f, c)
	}

	decWhole, decSplit, decAgain := transport.NewDecoder(fuzzLimits), transport.NewDecoder(fuzzLimits), transport.NewDecoder(fuzzLimits)

	f.Fuzz(func(t *testing.T, version uint16, data []byte) {
		v := fuzzVersion(version)
		for _, d := range []*transport.Decoder{decWhole, decSplit, decAgain} {
			if err := d.SetVersion(v); err != nil {
				t.Fatal(err)
			}
		}
		var whole decoded
		checkFuzzAllocs(t, func() { whole = decodeStream(decWhole, bytes.NewReader(data)) }, data, &whole)
		half := len(data) / 2
		split := decodeStream(decSplit, &chunkedReader{parts: [][]byte{data[:half:half], data[half:]}, max: 7})
		if len(whole.frames) != len(split.frames) {
			t.Fatalf("whole input gave %d frames (%v), split input %d (%v)", len(whole.frames), whole.err, len(split.frames), split.err)
		}
		if whole.err.Error() != split.err.Error() {
			t.Fatalf("whole input ended with %q, split input with %q", whole.err, split.err)
		}
		for i, fr := range whole.frames {
			if !equalFrames(fr, split.frames[i]) {
				t.Fatalf("frame %d differs between whole and split input", i)
			}
			if err := transport.CheckVersion(fr, v); err != nil {
				t.Fatalf("frame %d (%T) decoded at version %d: %v", i, fr, v, err)
			}
			for _, enc := range encs {
				buf, err := enc.AppendFrame(nil, fr)
				if err != nil {
					t.Fatalf("frame %d (%T): re-encode with %s: %v", i, fr, enc.Codec(), err)
				}
				again := decodeStream(decAgain, bytes.NewReader(buf))
				if len(again.frames) != 1 || again.err != io.EOF {
					t.Fatalf("frame %d (%T): re-encoded with %s decodes to %d frames, %v", i, fr, enc.Codec(), len(again.frames), again.err)
				}
				if !equalFrames(again.frames[0], fr) {
					t.Fatalf("frame %d (%T): re-encoded with %s decodes differently\n got %#v\nwant %#v", i, fr, enc.Codec(), again.frames[0], fr)
				}
			}
		}
	})
}

// FuzzReadFrameDicts feeds arbitrary bytes to a decoder that holds
// dictionaries, as a session's does once its peer has sent some: batches
// naming them decode with them. Seeds are batches compressed with a real
// dictionary. Properties: no panic, allocation within the bound of
// FuzzReadFrame, and a decoded batch re-encodes with the same dictionary
// to the same frame.
func FuzzReadFrameDicts(f *testing.F) {
	rng := transporttest.NewRand(7)
	send, recv, d := trainDicts(f, "leg", "events")
	denc, err := transport.NewEncoderOptions(transport.CodecZstd, transport.EncoderOptions{Dicts: send})
	if err != nil {
		f.Fatal(err)
	}
	for _, size := range []int{256, 4 << 10, 64 << 10} {
		buf, err := denc.AppendFrame(nil, transporttest.JSONBatch(rng, "leg", "events", 0, 1, 0, size))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(buf)
	}
	dbuf, err := transport.AppendFrame(nil, d)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(dbuf)
	dec := transport.NewDecoder(fuzzLimits)
	dec.SetDicts(recv)
	again := transport.NewDecoder(fuzzLimits)
	again.SetDicts(recv)
	f.Fuzz(func(t *testing.T, data []byte) {
		var out decoded
		checkFuzzAllocs(t, func() { out = decodeStream(dec, bytes.NewReader(data)) }, data, &out)
		for i, fr := range out.frames {
			b, ok := fr.(*transport.Batch)
			if !ok {
				continue
			}
			buf, err := denc.AppendFrame(nil, b)
			if err != nil {
				t.Fatalf("frame %d: re-encode: %v", i, err)
			}
			got := decodeStream(again, bytes.NewReader(buf))
			if len(got.frames) != 1 || !equalFrames(got.frames[0], b) {
				t.Fatalf("frame %d: re-encoded batch decodes differently (%v)", i, got.err)
			}
		}
	})
}

// FuzzReadHandshake feeds arbitrary bytes to the handshake reader, as a
// listener reads a Hello from a peer it has not welcomed yet, and a dialer
// the answer. Seeds are real Hello, Welcome and Error frames. Properties:
// no panic; only those three frame types are returned; allocation bounded
// by MaxHandshakeBytes whatever the frame declares; and what is accepted
// re-encodes to a frame ReadFrame decodes the same.
func FuzzReadHandshake(f *testing.F) {
	rng := transporttest.NewRand(9)
	for _, ft := range []transport.FrameType{transport.FrameHello, transport.FrameWelcome, transport.FrameError} {
		buf, err := transport.AppendFrame(nil, transporttest.RandomFrame(rng, ft))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(buf)
	}
	f.Add([]byte{byte(transport.FrameBatch), 0x80, 0x80, 0x80, 0x1e})
	// Version 4's fields: a duplex Hello and Welcome, and each cut short
	// inside the appended fields.
	for _, fr := range []transport.Frame{
		&transport.Hello{VersionMin: 1, VersionMax: 4, Gateway: "v7-a", Region: "v7", Legs: []string{"up:hq/kafka"},
			Codecs: []transport.Codec{1, 2, 0}, Receive: []string{"cfg:v7/kafka", "cmd:v7/kafka"}, RecvWindow: 64 << 20, RecvMaxBatchBytes: 1 << 20},
		&transport.Welcome{Version: 4, Gateway: "hq-a", Region: "hq", Window: 64 << 20, MaxBatchBytes: 1 << 20, Send: []string{"cfg:v7/kafka"}},
		// Version 5: a relay's Hello naming its origin, with and without
		// version 4's fields set.
		&transport.Hello{VersionMin: 5, VersionMax: 5, Gateway: "dr-a", Region: "dr", Legs: []string{"up:hq/kafka"},
			Codecs: []transport.Codec{1, 2, 0}, Origin: "v7-a"},
		&transport.Hello{VersionMin: 1, VersionMax: 5, Gateway: "dr-a", Region: "dr", Legs: []string{"up:hq/kafka"},
			Receive: []string{"cfg:v7/kafka"}, RecvWindow: 1 << 20, Origin: "v7-a"},
	} {
		buf, err := transport.AppendFrame(nil, fr)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(buf)
		cut := append([]byte{}, buf[:len(buf)-3]...)
		cut[1] = byte(len(cut) - 2) // bodies here are under 128 bytes
		f.Add(cut)
	}
	dec := transport.NewDecoder(transport.Limits{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var fr transport.Frame
		var err error
		n := alloctest.Bytes(func() { fr, err = dec.ReadHandshake(bufio.NewReaderSize(bytes.NewReader(data), 16)) })
		if ceiling := uint64(2*transport.MaxHandshakeBytes + 64*len(data) + 64<<10); n > ceiling {
			t.Fatalf("reading %d bytes allocated %d, more than %d", len(data), n, ceiling)
		}
		if err != nil {
			return
		}
		switch fr.(type) {
		case *transport.Hello, *transport.Welcome, *transport.Error:
		default:
			t.Fatalf("ReadHandshake returned a %T", fr)
		}
		buf, err := transport.AppendFrame(nil, fr)
		if err != nil {
			t.Fatalf("re-encode %T: %v", fr, err)
		}
		got, err := transport.NewDecoder(transport.Limits{}).ReadFrame(bufio.NewReader(bytes.NewReader(buf)))
		if err != nil || !equalFrames(got, fr) {
			t.Fatalf("%T re-encoded decodes to %#v, %v", fr, got, err)
		}
	})
}
