package transport_test

import (
	"encoding/binary"
	"strings"
	"testing"

	"github.com/meridian-gw/meridian/transport"
	"github.com/meridian-gw/meridian/transport/transporttest"
)

func kafkaBatch(kafka []byte) *transport.Batch {
	return &transport.Batch{Leg: "leg", Gen: 3, Seq: 9, Topic: "events", Partition: 2, NextOffset: 5000, HighWatermark: 6000, Kafka: kafka}
}

// Kafka record batches cross the link byte for byte with every codec.
func TestKafkaBatchesRoundTrip(t *testing.T) {
	rng := transporttest.NewRand(7)
	for _, compressed := range []bool{false, true} {
		kafka := transporttest.KafkaBatches(rng, 4, 4<<10, compressed)
		for _, c := range codecs {
			b := kafkaBatch(kafka)
			buf, err := newEncoder(t, c).AppendFrame(nil, b)
			if err != nil {
				t.Fatal(err)
			}
			f, err := readOne(t, transport.NewDecoder(transport.Limits{}), buf)
			if err != nil {
				t.Fatalf("%s, compressed=%v: %v", c, compressed, err)
			}
			if !equalFrames(f, b) {
				t.Fatalf("%s, compressed=%v: decoded batch differs", c, compressed)
			}
			if got, want := f.(*transport.Batch).Len(), b.Len(); got != want || want == 0 {
				t.Fatalf("Len: decoded %d, sent %d", got, want)
			}
			// Batches Kafka compressed are not compressed again; the
			// others are (the JSON bodies compress well).
			if compressed && len(buf) < len(kafka) {
				t.Fatalf("%s: compressed Kafka batches were compressed again (%d wire bytes for %d)", c, len(buf), len(kafka))
			}
			if !compressed && c != transport.CodecNone && len(buf) > len(kafka)/2 {
				t.Fatalf("%s: uncompressed Kafka batches took %d wire bytes for %d", c, len(buf), len(kafka))
			}
		}
	}
}

// The receiver refuses Kafka batches it could not pass on as their producer
// wrote them, and the sender refuses to send what is not whole Kafka batches.
func TestKafkaBatchesRejected(t *testing.T) {
	rng := transporttest.NewRand(8)
	good := transporttest.KafkaBatches(rng, 2, 512, false)
	second := 12 + int(binary.BigEndian.Uint32(good[8:]))
	cases := map[string]struct {
		mutate func(b []byte)
		want   string
	}{
		"crc":     {func(b []byte) { b[100]++ }, "CRC"},
		"length":  {func(b []byte) { binary.BigEndian.PutUint32(b[second+8:], binary.BigEndian.Uint32(b[second+8:])+1) }, "does not fit"},
		"short":   {func(b []byte) { binary.BigEndian.PutUint32(b[8:], 10) }, "does not fit"},
		"magic":   {func(b []byte) { b[second+16] = 1 }, "message format v1"},
		"control": {func(b []byte) { b[22] |= 0x20 }, "control batch"},
		"logtime": {func(b []byte) { b[22] |= 0x08 }, "LogAppendTime"},
		"horizon": {func(b []byte) { b[22] |= 0x40 }, "delete horizon"},
		"gap":     {func(b []byte) { binary.BigEndian.PutUint32(b[23:], binary.BigEndian.Uint32(b[57:])) }, "records over"},
	}
	for name, tc := range cases {
		// Encode the good batches, then damage them inside the frame
		// (codec none: the frame ends with them).
		buf, err := newEncoder(t, transport.CodecNone).AppendFrame(nil, kafkaBatch(good))
		if err != nil {
			t.Fatal(err)
		}
		tc.mutate(buf[len(buf)-len(good):])
		_, err = readOne(t, transport.NewDecoder(transport.Limits{}), buf)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%s: decode error %v, want it to mention %q", name, err, tc.want)
		}
		if name == "crc" {
			continue // the sender does not recompute CRCs
		}
		bad := append([]byte(nil), good...)
		tc.mutate(bad)
		if _, err := newEncoder(t, transport.CodecNone).AppendFrame(nil, kafkaBatch(bad)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%s: encode error %v, want it to mention %q", name, err, tc.want)
		}
	}
}
