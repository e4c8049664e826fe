package transport_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/meridian-gw/meridian/internal/alloctest"
	"github.com/meridian-gw/meridian/transport"
	"github.com/meridian-gw/meridian/transport/transporttest"
)

// trainDicts feeds a sender's Dicts JSON batches of (leg, topic) until it
// trains a dictionary, acknowledges it and hands it to a receiver's Dicts.
func trainDicts(tb testing.TB, leg, topic string) (send, recv *transport.Dicts, d *transport.Dict) {
	tb.Helper()
	send, recv = transport.NewSendDicts(), transport.NewRecvDicts()
	rng := transporttest.NewRand(99)
	for i := 0; d == nil; i++ {
		if i > 100 {
			tb.Fatal("no dictionary after 100 batches")
		}
		d = send.Observe(transporttest.JSONBatch(rng, leg, topic, 0, uint64(i), int64(i)*100, 16<<10))
	}
	if err := recv.Add(d); err != nil {
		tb.Fatalf("add: %v", err)
	}
	if err := send.Ack(d.ID); err != nil {
		tb.Fatalf("ack: %v", err)
	}
	return send, recv, d
}

func roundTrip(tb testing.TB, enc *transport.Encoder, dec *transport.Decoder, b *transport.Batch) (*transport.Batch, int, error) {
	tb.Helper()
	buf, err := enc.AppendFrame(nil, b)
	if err != nil {
		tb.Fatalf("encode: %v", err)
	}
	f, err := dec.ReadFrame(bufio.NewReader(bytes.NewReader(buf)))
	if err != nil {
		return nil, len(buf), err
	}
	return f.(*transport.Batch), len(buf), nil
}

func TestDictRoundTrip(t *testing.T) {
	send, recv, d := trainDicts(t, "leg", "events")
	if d.ID != 1 || len(d.Data) == 0 || d.Leg != "leg" || d.Topic != "events" {
		t.Fatalf("dict %d %q/%q of %d bytes, want id 1 for leg/events", d.ID, d.Leg, d.Topic, len(d.Data))
	}
	for _, lv := range []transport.Level{transport.LevelFastest, transport.LevelBetter} {
		enc, err := transport.NewEncoderOptions(transport.CodecZstd, transport.EncoderOptions{Level: lv, Dicts: send})
		if err != nil {
			t.Fatal(err)
		}
		plain, _ := transport.NewEncoderOptions(transport.CodecZstd, transport.EncoderOptions{Level: lv})
		dec := transport.NewDecoder(transport.Limits{})
		dec.SetDicts(recv)
		defer dec.Close()
		rng := transporttest.NewRand(5)
		for _, n := range []int{1, 10, 100} {
			b := &transport.Batch{Leg: "leg", Gen: 1, Seq: 7, Topic: "events", NextOffset: int64(n)}
			b.Records = transporttest.JSONRecords(rng, n, 1024, 0)
			got, size, err := roundTrip(t, enc, dec, b)
			if err != nil {
				t.Fatalf("level %s, %d records: %v", lv, n, err)
			}
			got.WireSize = 0
			if !reflect.DeepEqual(got, b) {
				t.Fatalf("level %s, %d records: batch differs after the round trip", lv, n)
			}
			_, plainSize, err := roundTrip(t, plain, dec, b)
			if err != nil {
				t.Fatal(err)
			}
			if size >= plainSize {
				t.Errorf("level %s, %d records: %d bytes with the dictionary, %d without", lv, n, size, plainSize)
			}
		}
		// Another topic has no dictionary and still round-trips.
		b := transporttest.JSONBatch(rng, "leg", "other", 0, 1, 0, 4<<10)
		if _, _, err := roundTrip(t, enc, dec, b); err != nil {
			t.Fatalf("other topic: %v", err)
		}
	}
}

func TestDictUnknown(t *testing.T) {
	send, _, _ := trainDicts(t, "leg", "events")
	enc, _ := transport.NewEncoderOptions(transport.CodecZstd, transport.EncoderOptions{Dicts: send})
	b := transporttest.JSONBatch(transporttest.NewRand(1), "leg", "events", 3, 1, 0, 8<<10)
	for name, dec := range map[string]*transport.Decoder{
		"no dicts": transport.NewDecoder(transport.Limits{}),
		"other dicts": func() *transport.Decoder {
			d := transport.NewDecoder(transport.Limits{})
			d.SetDicts(transport.NewRecvDicts())
			return d
		}(),
	} {
		_, _, err := roundTrip(t, enc, dec, b)
		if !errors.Is(err, transport.ErrMalformed) || !strings.Contains(err.Error(), "events/3: zstd: batch uses dictionary 1, which the peer never sent") {
			t.Errorf("%s: got %v, want a malformed-frame error naming dictionary 1", name, err)
		}
		dec.Close()
	}
}

func TestDictsLimits(t *testing.T) {
	_, _, d := trainDicts(t, "leg", "events")
	recv := transport.NewRecvDicts()
	renumber := func(id uint32) *transport.Dict {
		// The dictionary's own header carries its ID (bytes 4-7).
		data := append([]byte(nil), d.Data...)
		data[4], data[5], data[6], data[7] = byte(id), byte(id>>8), byte(id>>16), byte(id>>24)
		return &transport.Dict{ID: id, Leg: "leg", Topic: fmt.Sprint("t", id), Data: data}
	}
	for id := uint32(1); id <= transport.MaxDicts; id++ {
		if err := recv.Add(renumber(id)); err != nil {
			t.Fatalf("add %d: %v", id, err)
		}
	}
	for _, tc := range []struct {
		d    *transport.Dict
		want string
	}{
		{renumber(transport.MaxDicts + 1), "exceeds the limit of 16 per session"},
		{renumber(3), "dictionary 3 sent twice"},
		{&transport.Dict{ID: 0, Data: d.Data}, "id 0 is reserved"},
		{&transport.Dict{ID: 40, Data: []byte("not a dictionary")}, "invalid zstd dictionary"},
		{&transport.Dict{ID: 41, Data: d.Data}, "its data names id 1"},
	} {
		if err := recv.Add(tc.d); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("add %d: got %v, want %q", tc.d.ID, err, tc.want)
		}
	}
	send := transport.NewSendDicts()
	if err := send.Ack(1); err == nil {
		t.Error("ack of a dictionary never sent: no error")
	}
}

func TestChooseCompression(t *testing.T) {
	for _, tc := range []struct {
		rate, idle float64
		codec      transport.Codec
		level      transport.Level
	}{
		{10e6, 0.9, transport.CodecZstd, transport.LevelBetter},
		{100e6, 0.5, transport.CodecZstd, transport.LevelBetter},
		{100e6, 0.2, transport.CodecZstd, transport.LevelFastest},
		{1e9, 0.9, transport.CodecZstd, transport.LevelFastest},
		{0, 0.9, transport.CodecZstd, transport.LevelFastest},
		{10e6, 0.1, transport.CodecS2, transport.LevelFastest},
	} {
		c, l := transport.ChooseCompression(tc.rate, tc.idle)
		if c != tc.codec || l != tc.level {
			t.Errorf("ChooseCompression(%g, %g) = %s, %s; want %s, %s", tc.rate, tc.idle, c, l, tc.codec, tc.level)
		}
	}
}

// BenchmarkDict measures zstd with and without a per-topic dictionary
// (trained from 256 KiB of other events of the topic) on JSON batches of
// 1, 10 and 100 events of 1 KiB and of 64 KiB. ratio is raw record-block
// bytes per wire byte of the whole batch frame.
//
//	go test -run '^$' -bench BenchmarkDict ./transport/
func BenchmarkDict(b *testing.B) {
	send, _, _ := trainDicts(b, "leg", "events")
	rng := transporttest.NewRand(8)
	batches := []struct {
		name string
		b    *transport.Batch
	}{{"events=1", nil}, {"events=10", nil}, {"events=100", nil}, {"size=64KiB", transporttest.JSONBatch(rng, "leg", "events", 0, 1, 0, 64<<10)}}
	for i, n := range []int{1, 10, 100} {
		batches[i].b = &transport.Batch{Leg: "leg", Gen: 1, Seq: 1, Topic: "events", Records: transporttest.JSONRecords(rng, n, 1024, 0)}
	}
	for _, bt := range batches {
		raw := bt.b.RawSize()
		for _, v := range []struct {
			name  string
			level transport.Level
			dicts *transport.Dicts
		}{
			{"fastest", transport.LevelFastest, nil},
			{"fastest+dict", transport.LevelFastest, send},
			{"better", transport.LevelBetter, nil},
			{"better+dict", transport.LevelBetter, send},
		} {
			b.Run(bt.name+"/"+v.name, func(b *testing.B) {
				enc, err := transport.NewEncoderOptions(transport.CodecZstd, transport.EncoderOptions{Level: v.level, Dicts: v.dicts})
				if err != nil {
					b.Fatal(err)
				}
				buf, _ := enc.AppendFrame(nil, bt.b)
				b.SetBytes(int64(raw))
				for b.Loop() {
					buf, _ = enc.AppendFrame(buf[:0], bt.b)
				}
				b.ReportMetric(float64(raw)/float64(len(buf)), "ratio")
			})
		}
	}
}

// BenchmarkDictTrain measures sampling 256 KiB of 1 KiB JSON values and
// training a dictionary from them (once per topic and session).
//
//	go test -run '^$' -bench BenchmarkDictTrain ./transport/
func BenchmarkDictTrain(b *testing.B) {
	for b.Loop() {
		trainDicts(b, "leg", "events")
	}
}

// TestDictDecoderPerSession checks that the Decoders of one session's
// streams share one dictionary decoder: a second Decoder's first batch
// costs what a batch costs, not a decoder of its own.
func TestDictDecoderPerSession(t *testing.T) {
	send, recv, _ := trainDicts(t, "leg", "events")
	enc, err := transport.NewEncoderOptions(transport.CodecZstd, transport.EncoderOptions{Dicts: send})
	if err != nil {
		t.Fatal(err)
	}
	rng := transporttest.NewRand(5)
	b := transporttest.JSONBatch(rng, "leg", "events", 0, 1, 0, 2<<10)
	decode := func(dec *transport.Decoder) uint64 {
		return alloctest.Bytes(func() {
			if _, _, err := roundTrip(t, enc, dec, b); err != nil {
				t.Fatal(err)
			}
		})
	}
	first, second := transport.NewDecoder(transport.Limits{}), transport.NewDecoder(transport.Limits{})
	first.SetDicts(recv)
	second.SetDicts(recv)
	built := decode(first)
	again := decode(first)
	other := decode(second)
	t.Logf("first batch %d bytes (builds the decoder), next %d, first on another stream %d", built, again, other)
	if other > 2*again+64<<10 {
		t.Errorf("another stream's first batch allocated %d bytes, a batch costs %d: it built a dictionary decoder of its own", other, again)
	}
}
