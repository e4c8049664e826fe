package quic

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/transport"
	"github.com/meridian-gw/meridian/transport/transporttest"
)

// TestDictionaries sends small batches of one topic until the sender has
// trained, shared and had acknowledged a dictionary, then checks that later
// batches decode and are smaller on the wire.
func TestDictionaries(t *testing.T) {
	for _, stripes := range []int{1, 2} {
		t.Run(fmt.Sprint("stripes=", stripes), func(t *testing.T) {
			s := newSession(t, nil, func(o *DialerOptions) {
				o.Codec, o.CodecLevel, o.Dictionaries, o.Stripes = transport.CodecZstd, transport.LevelBetter, true, stripes
			})
			rng := transporttest.NewRand(3)
			seq := uint64(0)
			roundTrip := func(topic string) int {
				seq++
				b := &transport.Batch{Leg: "v7-to-hq", Gen: 1, Seq: seq, Topic: topic, Partition: int32(seq % 3)}
				b.Records = transporttest.JSONRecords(rng, 5, 1024, int64(seq)*5)
				b.NextOffset = int64(seq)*5 + 5
				send(t, s.client, b)
				got := recv(t, s.server).(*transport.Batch)
				if got.WireSize != b.WireSize {
					t.Fatalf("seq %d: received wire size %d, sent %d", seq, got.WireSize, b.WireSize)
				}
				want := *b
				if !reflect.DeepEqual(got, &want) {
					t.Fatalf("seq %d: batch differs after the round trip", seq)
				}
				return b.WireSize
			}
			before := roundTrip("events")
			for s.client.txDicts.Len() == 0 {
				if seq > 200 {
					t.Fatal("no dictionary trained after 200 batches")
				}
				roundTrip("events")
			}
			waitFor(t, 5*time.Second, "dictionary acknowledged", func() bool { return s.client.txDicts.Acked() == 1 })
			if n := s.server.rxDicts.Len(); n != 1 {
				t.Fatalf("receiver holds %d dictionaries, want 1", n)
			}
			after := roundTrip("events")
			if after >= before*9/10 {
				t.Errorf("5-event batch: %d wire bytes with the dictionary, %d before", after, before)
			}
			roundTrip("other") // no dictionary: still fine
		})
	}
}

// TestDictAckUnknown: a DictAck for a dictionary never sent ends the
// session with a protocol error.
func TestDictAckUnknown(t *testing.T) {
	s := newSession(t, nil, nil)
	buf, err := transport.AppendFrame(nil, &transport.DictAck{ID: 5})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.client.ctlStream.Write(buf); err != nil {
		t.Fatal(err)
	}
	<-s.server.Done()
	mustContain(t, s.server.Err(), "peer v7-a", "protocol violation", "ack of dictionary 5, which was never sent")
	<-s.client.Done()
	var te *transport.Error
	if !errors.As(s.client.Err(), &te) || te.Code != transport.ErrCodeProtocol {
		t.Fatalf("client Err() = %v, want a protocol error from the peer", s.client.Err())
	}
}

// TestDictInvalid: a Dict whose data is not a zstd dictionary ends the
// session with a protocol error.
func TestDictInvalid(t *testing.T) {
	s := newSession(t, nil, nil)
	buf, err := transport.AppendFrame(nil, &transport.Dict{ID: 1, Leg: "l", Topic: "t", Data: []byte("garbage")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.client.ctlStream.Write(buf); err != nil {
		t.Fatal(err)
	}
	<-s.server.Done()
	mustContain(t, s.server.Err(), "protocol violation", "dictionary 1: invalid zstd dictionary")
}

// TestNoDictionariesWithVersion1 checks that a sender never trains or sends
// dictionaries to a peer that agreed on version 1, which predates them.
func TestNoDictionariesWithVersion1(t *testing.T) {
	p := getPKI(t)
	ln := listen(t, p.server("hq-a"))
	do := p.client("v7-a", "hq-a")
	do.Codec, do.Dictionaries = transport.CodecZstd, true
	c, err := dial(t, ln, do, &transport.Hello{VersionMin: 1, VersionMax: 1, Gateway: "v7-a", Region: "vessel-7", Legs: []string{"v7-to-hq"}})
	if err != nil {
		t.Fatal(err)
	}
	accept(t, ln)
	if v := c.Welcome().Version; v != 1 {
		t.Fatalf("agreed version %d, want 1", v)
	}
	if c.txDicts != nil {
		t.Fatal("the sender would train dictionaries on a version 1 session")
	}
}
