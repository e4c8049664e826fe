package quic

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/transport"
	"github.com/meridian-gw/meridian/transport/transporttest"
)

// A session carries only the frames of the version it agreed on. Send
// refuses a frame of a later version; a peer that writes one anyway (here:
// past Send, straight onto the stream) has the session ended with a
// protocol error that names both versions, and the frame is never handed
// to Recv.
func TestSessionRefusesFramesOfLaterVersions(t *testing.T) {
	rng := transporttest.NewRand(5)
	kafka := &transport.Batch{Leg: "v7-to-hq", Topic: "t", Partition: 1, NextOffset: 100,
		Kafka: transporttest.KafkaBatches(rng, 2, 512, false)}
	for _, tc := range []struct {
		name    string
		version uint16
		frame   transport.Frame
		lane    bool   // written on a lane, else on the control stream
		sendErr string // Send's error
		recvErr string // the receiver's end
	}{
		{"kafka batch on v2", 2, kafka, true,
			"batch of Kafka record batches needs protocol version 3; the session speaks version 2",
			"Kafka record batches (bit 0x10) need protocol version 3; the session speaks version 2"},
		{"dict on v1", 1, &transport.Dict{ID: 1, Leg: "v7-to-hq", Topic: "t", Data: []byte("x")}, false,
			"dict frame needs protocol version 2; the session speaks version 1",
			"dict frame needs protocol version 2; the session speaks version 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := getPKI(t)
			ln := listen(t, p.server("hq-a"))
			c, err := dial(t, ln, p.client("v7-a", "hq-a"), &transport.Hello{
				VersionMin: tc.version, VersionMax: tc.version, Gateway: "v7-a", Region: "vessel-7", Legs: []string{"v7-to-hq"}})
			if err != nil {
				t.Fatal(err)
			}
			srv := accept(t, ln)
			if v := srv.Welcome().Version; v != tc.version {
				t.Fatalf("agreed version %d, want %d", v, tc.version)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err = c.Send(ctx, tc.frame)
			mustContain(t, err, tc.sendErr)
			if c.Err() != nil {
				t.Fatalf("a refused Send ended the session: %v", c.Err())
			}

			s := c.ctl
			if tc.lane {
				if s, err = c.lane(laneOf(tc.frame.(*transport.Batch), len(c.lanes))); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.send(ctx, tc.frame, 0, false); err != nil {
				t.Fatal(err)
			}
			f, err := srv.Recv(ctx)
			if f != nil {
				t.Fatalf("receiver got a %s frame of a later version", transport.TypeOf(f))
			}
			mustContain(t, err, tc.recvErr)
			if !errors.Is(err, transport.ErrMalformed) {
				t.Fatalf("receiver's error %v does not wrap ErrMalformed", err)
			}
			<-c.Done()
			var te *transport.Error
			if !errors.As(c.Err(), &te) || te.Code != transport.ErrCodeProtocol {
				t.Fatalf("sender's session ended with %v, want a protocol error from the peer", c.Err())
			}
			mustContain(t, c.Err(), tc.recvErr)
		})
	}
}
