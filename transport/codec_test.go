package transport_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"

	"github.com/meridian-gw/meridian/internal/alloctest"
	"github.com/meridian-gw/meridian/transport"
	"github.com/meridian-gw/meridian/transport/transporttest"
)

var codecs = []transport.Codec{transport.CodecNone, transport.CodecZstd, transport.CodecS2}

func newEncoder(t testing.TB, c transport.Codec) *transport.Encoder {
	t.Helper()
	e, err := transport.NewEncoder(c)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func readOne(t testing.TB, d *transport.Decoder, b []byte) (transport.Frame, error) {
	t.Helper()
	return d.ReadFrame(bufio.NewReader(bytes.NewReader(b)))
}

// equalFrames compares frames, ignoring Batch.WireSize.
func equalFrames(a, b transport.Frame) bool {
	if ba, ok := a.(*transport.Batch); ok {
		if bb, ok := b.(*transport.Batch); ok {
			x, y := *ba, *bb
			x.WireSize, y.WireSize = 0, 0
			return reflect.DeepEqual(&x, &y)
		}
	}
	return reflect.DeepEqual(a, b)
}

func TestRoundTripRandomFrames(t *testing.T) {
	rng := transporttest.NewRand(1)
	encs := map[transport.Codec]*transport.Encoder{}
	for _, c := range codecs {
		encs[c] = newEncoder(t, c)
	}
	dec := transport.NewDecoder(transport.Limits{})
	defer dec.Close()
	var buf []byte
	for i := range 3000 {
		ft := transporttest.FrameTypes[i%len(transporttest.FrameTypes)]
		c := codecs[(i/len(transporttest.FrameTypes))%len(codecs)]
		f := transporttest.RandomFrame(rng, ft)
		var err error
		buf, err = encs[c].AppendFrame(buf[:0], f)
		if err != nil {
			t.Fatalf("frame %d (%s, %s): encode: %v", i, ft, c, err)
		}
		got, err := readOne(t, dec, buf)
		if err != nil {
			t.Fatalf("frame %d (%s, %s): decode: %v", i, ft, c, err)
		}
		if !equalFrames(got, f) {
			t.Fatalf("frame %d (%s, %s): round trip differs\n got %#v\nwant %#v", i, ft, c, got, f)
		}
		if b, ok := got.(*transport.Batch); ok && b.WireSize != len(buf) {
			t.Fatalf("frame %d: WireSize = %d, want %d", i, b.WireSize, len(buf))
		}
		if ft != transport.FrameBatch {
			// Non-batch frames encode the same without an Encoder.
			plain, err := transport.AppendFrame(nil, f)
			if err != nil || !bytes.Equal(plain, buf) {
				t.Fatalf("frame %d (%s): AppendFrame differs from Encoder.AppendFrame (err %v)", i, ft, err)
			}
		}
	}
}

func TestRawSizeMatchesEncoding(t *testing.T) {
	rng := transporttest.NewRand(2)
	enc := newEncoder(t, transport.CodecZstd)
	for i := range 500 {
		b := transporttest.RandomFrame(rng, transport.FrameBatch).(*transport.Batch)
		_, raw, err := enc.AppendBatch(nil, b)
		if err != nil {
			t.Fatal(err)
		}
		if got := b.RawSize(); got != raw {
			t.Fatalf("batch %d: RawSize() = %d, encoder wrote %d", i, got, raw)
		}
	}
}

func TestNullAndEmptyAreDistinct(t *testing.T) {
	b := &transport.Batch{Leg: "l", Topic: "t", Records: []transport.Record{
		{Offset: 10, Key: nil, Value: []byte{}},
		{Offset: 11, Key: []byte{}, Value: nil, Headers: []transport.Header{{Key: "", Value: nil}, {Key: "h", Value: []byte{}}}},
	}}
	for _, c := range codecs {
		buf, err := newEncoder(t, c).AppendFrame(nil, b)
		if err != nil {
			t.Fatal(err)
		}
		f, err := readOne(t, transport.NewDecoder(transport.Limits{}), buf)
		if err != nil {
			t.Fatal(err)
		}
		got := f.(*transport.Batch).Records
		if got[0].Key != nil || got[0].Value == nil || got[1].Key == nil || got[1].Value != nil {
			t.Errorf("%s: nil/empty key/value not preserved: %#v", c, got)
		}
		if got[1].Headers[0].Value != nil || got[1].Headers[1].Value == nil {
			t.Errorf("%s: nil/empty header value not preserved: %#v", c, got[1].Headers)
		}
	}
}

func TestEmptyListsDecodeAsNil(t *testing.T) {
	for _, f := range []transport.Frame{
		&transport.Hello{Legs: []string{}, Codecs: []transport.Codec{}},
		&transport.Resume{Positions: []transport.Position{}},
		&transport.Ack{Seqs: []uint64{}},
		&transport.Topic{Configs: map[string]string{}},
		&transport.Batch{Records: []transport.Record{}},
	} {
		buf, err := newEncoder(t, transport.CodecNone).AppendFrame(nil, f)
		if err != nil {
			t.Fatal(err)
		}
		got, err := readOne(t, transport.NewDecoder(transport.Limits{}), buf)
		if err != nil {
			t.Fatalf("%T: %v", f, err)
		}
		v := reflect.ValueOf(got).Elem()
		for i := range v.NumField() {
			if fv := v.Field(i); (fv.Kind() == reflect.Slice || fv.Kind() == reflect.Map) && !fv.IsNil() {
				t.Errorf("%T.%s: got empty non-nil, want nil", got, v.Type().Field(i).Name)
			}
		}
	}
}

// TestStreamShortReads decodes a stream of frames through readers that
// return one byte, or half of what was asked, at a time.
func TestStreamShortReads(t *testing.T) {
	rng := transporttest.NewRand(3)
	enc := newEncoder(t, transport.CodecZstd)
	var stream []byte
	var want []transport.Frame
	for i := range 200 {
		f := transporttest.RandomFrame(rng, transporttest.FrameTypes[i%len(transporttest.FrameTypes)])
		var err error
		if stream, err = enc.AppendFrame(stream, f); err != nil {
			t.Fatal(err)
		}
		want = append(want, f)
	}
	for name, r := range map[string]io.Reader{
		"one-byte": iotest.OneByteReader(bytes.NewReader(stream)),
		"half":     iotest.HalfReader(bytes.NewReader(stream)),
		"data-err": iotest.DataErrReader(bytes.NewReader(stream)),
	} {
		t.Run(name, func(t *testing.T) {
			br := bufio.NewReaderSize(r, 16)
			dec := transport.NewDecoder(transport.Limits{})
			for i, w := range want {
				got, err := dec.ReadFrame(br)
				if err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
				if !equalFrames(got, w) {
					t.Fatalf("frame %d differs", i)
				}
			}
			if _, err := dec.ReadFrame(br); err != io.EOF {
				t.Fatalf("after last frame: got %v, want io.EOF", err)
			}
		})
	}
}

func TestEncodeAllocations(t *testing.T) {
	rng := transporttest.NewRand(4)
	b := transporttest.JSONBatch(rng, "leg", "events", 3, 1, 1000, 64<<10)
	for _, c := range codecs {
		enc := newEncoder(t, c)
		buf, _ := enc.AppendFrame(nil, b) // warm up scratch buffers
		allocs := testing.AllocsPerRun(20, func() {
			buf, _ = enc.AppendFrame(buf[:0], b)
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per encode, want 0", c, allocs)
		}
	}
}

func TestIncompressibleBatchIsSentRaw(t *testing.T) {
	rng := transporttest.NewRand(5)
	val := make([]byte, 4096)
	for i := range val {
		val[i] = byte(rng.Uint32())
	}
	b := &transport.Batch{Topic: "t", Records: []transport.Record{{Value: val}}}
	for _, c := range []transport.Codec{transport.CodecZstd, transport.CodecS2} {
		buf, err := newEncoder(t, c).AppendFrame(nil, b)
		if err != nil {
			t.Fatal(err)
		}
		if len(buf) > b.RawSize()+16 {
			t.Errorf("%s: incompressible batch grew to %d bytes (raw %d)", c, len(buf), b.RawSize())
		}
		if _, err := readOne(t, transport.NewDecoder(transport.Limits{}), buf); err != nil {
			t.Fatal(err)
		}
	}
}

// batchFrame builds a batch frame by hand so that tests can lie about sizes.
func batchFrame(codec transport.Codec, rawLen int, payload []byte) []byte {
	var body []byte
	body = binary.AppendUvarint(body, 1) // leg "x"
	body = append(body, 'x')
	body = binary.AppendUvarint(body, 1) // gen
	body = binary.AppendUvarint(body, 7) // seq
	body = binary.AppendUvarint(body, 1) // topic "t"
	body = append(body, 't')
	body = binary.AppendVarint(body, 0) // partition
	body = binary.AppendVarint(body, 0) // next offset
	body = binary.AppendVarint(body, 0) // high watermark
	body = append(body, byte(codec))
	body = binary.AppendUvarint(body, uint64(rawLen))
	body = append(body, payload...)
	out := []byte{byte(transport.FrameBatch)}
	out = binary.AppendUvarint(out, uint64(len(body)))
	return append(out, body...)
}

func recordBlock(n int, recs ...[]byte) []byte {
	var b []byte
	b = binary.AppendUvarint(b, uint64(n))
	b = binary.AppendVarint(b, 0)
	b = binary.AppendVarint(b, 0)
	for _, r := range recs {
		b = append(b, r...)
	}
	return b
}

func TestDecodeRejects(t *testing.T) {
	zenc, _ := zstd.NewWriter(nil)
	bomb := zenc.EncodeAll(make([]byte, 8<<20), nil)
	oneRec := []byte{0, 0, 1, 1, 0} // deltas 0, key nil, value nil, no headers
	blk := recordBlock(1, oneRec)
	manyHeaders := recordBlock(1, append([]byte{0, 0, 1, 1}, binary.AppendUvarint(nil, 5000)...))

	lim := transport.Limits{MaxFrameBytes: 1 << 20, MaxBatchBytes: 1 << 20, MaxRecords: 100, MaxHeaders: 10}
	tests := []struct {
		name string
		in   []byte
		want string // substring of the error
	}{
		{"unknown type", []byte{0x2a, 0}, "unknown frame type frame(0x2a)"},
		{"type zero", []byte{0, 0}, "unknown frame type frame(0x0)"},
		{"frame too large", append([]byte{byte(transport.FrameGoaway)}, binary.AppendUvarint(nil, 60<<20)...), "exceeds the limit of 1048576"},
		{"truncated body", []byte{byte(transport.FrameGoaway), 5, 3, 'a'}, "unexpected EOF"},
		{"truncated length", []byte{byte(transport.FrameGoaway), 0x80}, "unexpected EOF"},
		{"trailing bytes", []byte{byte(transport.FrameCredit), 2, 0, 0}, "1 trailing bytes"},
		{"string past end", []byte{byte(transport.FrameGoaway), 2, 9, 'a'}, "length 9 exceeds the remaining 1 bytes"},
		{"count past end", []byte{byte(transport.FrameAck), 2, 100, 1}, "count 100 exceeds"},
		{"uint16 range", []byte{byte(transport.FrameError), 4, 0xff, 0xff, 0x7f, 0}, "out of range"},
		{"duplicate config", []byte{byte(transport.FrameTopic), 10, 0, 0, 0, 2, 1, 'k', 0, 1, 'k', 0}, `duplicate key "k"`},
		{"raw length over limit", batchFrame(transport.CodecNone, 2<<20, nil), "exceeds the limit of 1048576"},
		{"none length mismatch", batchFrame(transport.CodecNone, len(blk)+1, blk), "payload is 8 bytes, declared 9"},
		{"zstd bomb", batchFrame(transport.CodecZstd, 1000, bomb), "zstd: frame declares 8388608 bytes, batch declares 1000"},
		{"zstd garbage", batchFrame(transport.CodecZstd, 10, []byte("garbage!")), "zstd"},
		{"s2 length mismatch", batchFrame(transport.CodecS2, len(blk)+3, s2.Encode(nil, blk)), "s2: block decodes to 8 bytes, declared 11"},
		{"s2 garbage", batchFrame(transport.CodecS2, 3, []byte{3, 0xff, 0xff}), "s2"},
		{"unknown codec", batchFrame(9, 3, []byte{0, 0, 0}), "unknown codec codec(9)"},
		{"too many records", batchFrame(transport.CodecNone, 3+5*101, recordBlock(101, bytes.Repeat(oneRec, 101))), "101 records exceed the limit of 100"},
		{"records past end", batchFrame(transport.CodecNone, len(recordBlock(50, oneRec)), recordBlock(50, oneRec)), "50 records cannot fit"},
		{"too many headers", batchFrame(transport.CodecNone, len(manyHeaders), manyHeaders), "5000 headers exceed the limit of 10"},
		{"bad key length", batchFrame(transport.CodecNone, 8, recordBlock(1, []byte{0, 0, 3, 1, 0})), "key: invalid length -2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readOne(t, transport.NewDecoder(lim), tc.in)
			if err == nil {
				t.Fatalf("got no error, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got error %q, want it to contain %q", err, tc.want)
			}
			if !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, transport.ErrMalformed) {
				t.Errorf("error %q wraps neither ErrMalformed nor io.ErrUnexpectedEOF", err)
			}
		})
	}
}

func TestHelloIgnoresTrailingFields(t *testing.T) {
	buf, err := transport.AppendFrame(nil, &transport.Hello{VersionMin: 1, VersionMax: 3, Gateway: "g"})
	if err != nil {
		t.Fatal(err)
	}
	buf[1] += 2 // a later version appended two bytes
	buf = append(buf, 0xaa, 0xbb)
	f, err := readOne(t, transport.NewDecoder(transport.Limits{}), buf)
	if err != nil {
		t.Fatal(err)
	}
	if h := f.(*transport.Hello); h.VersionMax != 3 || h.Gateway != "g" {
		t.Fatalf("got %#v", h)
	}
}

// TestForgedLengthAllocatesLittle checks that a frame declaring a huge body
// but delivering a few bytes costs the receiver little memory.
func TestForgedLengthAllocatesLittle(t *testing.T) {
	in := append([]byte{byte(transport.FrameBatch)}, binary.AppendUvarint(nil, 60<<20)...)
	in = append(in, "only a few bytes"...)
	dec := transport.NewDecoder(transport.Limits{})
	var err error
	alloctest.Check(t, "a forged 60 MiB frame", 1<<20, func() { _, err = readOne(t, dec, in) })
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("got %v, want unexpected EOF", err)
	}
}

func TestEncodeRejectsNil(t *testing.T) {
	if _, err := transport.AppendFrame(nil, nil); err == nil {
		t.Error("AppendFrame(nil) succeeded")
	}
	if _, err := transport.AppendFrame(nil, &transport.Batch{}); err == nil {
		t.Error("AppendFrame(batch) without an Encoder succeeded")
	}
	if _, err := transport.NewEncoder(7); err == nil || !strings.Contains(err.Error(), "codec(7)") {
		t.Errorf("NewEncoder(7): got %v", err)
	}
}

func TestFrameTypeString(t *testing.T) {
	for _, ft := range transporttest.FrameTypes {
		if s := ft.String(); strings.HasPrefix(s, "frame(") {
			t.Errorf("%d has no name", ft)
		}
	}
	if got, want := transport.FrameType(200).String(), "frame(0xc8)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestEmptyBatchRoundTrips(t *testing.T) {
	// A batch with no records moves a partition's next offset past
	// transaction markers; every codec must carry it.
	for _, c := range []transport.Codec{transport.CodecNone, transport.CodecZstd, transport.CodecS2} {
		enc, err := transport.NewEncoder(c)
		if err != nil {
			t.Fatal(err)
		}
		in := &transport.Batch{Leg: "l", Gen: 2, Seq: 9, Topic: "t", Partition: 3, NextOffset: 42, HighWatermark: 42}
		buf, err := enc.AppendFrame(nil, in)
		if err != nil {
			t.Fatalf("%v: encode: %v", c, err)
		}
		f, err := transport.NewDecoder(transport.Limits{}).ReadFrame(bufio.NewReader(bytes.NewReader(buf)))
		if err != nil {
			t.Fatalf("%v: decode: %v", c, err)
		}
		out, ok := f.(*transport.Batch)
		if !ok || out.NextOffset != 42 || len(out.Records) != 0 || out.Partition != 3 || out.Seq != 9 {
			t.Errorf("%v: got %+v, want an empty batch with next offset 42", c, f)
		}
	}
}
