package mirror

import (
	"context"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/transport"
	"github.com/meridian-gw/meridian/transport/transporttest"
)

// TestDuplexDemultiplexes: frames reach the half of their direction in
// order, an Error reaches both, and both then return the session's end.
func TestDuplexDemultiplexes(t *testing.T) {
	n := transporttest.NewNetwork()
	ln, err := n.Listen("hq:1", func(h *transport.Hello) (*transport.Welcome, error) {
		return &transport.Welcome{Gateway: "hq-a", Send: h.Receive}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dialler, err := n.Dialer().Dial(ctx, "hq:1", &transport.Hello{VersionMin: 1, VersionMax: transport.VersionMax, Gateway: "v7-a",
		Legs: []string{"up"}, Receive: []string{"cfg"}})
	if err != nil {
		t.Fatal(err)
	}
	listener, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d := newDuplex(listener, listener.Hello(), &transport.Welcome{}, listener.Hello(), listener.Welcome())
	defer d.close(nil)
	frames := []transport.Frame{
		&transport.Resume{Leg: "cfg", Gen: 1}, &transport.Batch{Leg: "up", Seq: 1}, &transport.Ack{Seqs: []uint64{7}},
		&transport.Topic{Leg: "up", Name: "t"}, &transport.Credit{Window: 5}, &transport.Groups{Leg: "up"},
		&transport.TopicReady{Leg: "cfg", Name: "c"}, &transport.Fenced{Leg: "cfg"}, &transport.Batch{Leg: "up", Seq: 2},
		&transport.Error{Code: transport.ErrCodeInternal, Message: "bye"},
	}
	for _, f := range frames {
		if err := dialler.Send(ctx, f); err != nil {
			t.Fatal(err)
		}
	}
	want := map[*half][]transport.FrameType{
		d.send: {transport.FrameResume, transport.FrameAck, transport.FrameCredit, transport.FrameTopicReady, transport.FrameFenced, transport.FrameError},
		d.recv: {transport.FrameBatch, transport.FrameTopic, transport.FrameGroups, transport.FrameBatch, transport.FrameError},
	}
	for h, types := range want {
		for i, ft := range types {
			f, err := h.Recv(ctx)
			if err != nil {
				t.Fatalf("%s half, frame %d: %v", h.hello.Gateway, i, err)
			}
			if got := transport.TypeOf(f); got != ft {
				t.Fatalf("half %p frame %d: got %s, want %s", h, i, got, ft)
			}
		}
	}
	dialler.Close(nil)
	for _, h := range []*half{d.send, d.recv} {
		if _, err := h.Recv(ctx); err == nil {
			t.Fatal("a half returned a frame after the session ended")
		}
	}
}
