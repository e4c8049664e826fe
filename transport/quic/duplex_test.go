package quic

import (
	"slices"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/transport"
)

// TestDuplexOverStripes: a version 4 Hello asking to receive legs and the
// Welcome listing what the listener sends back cross a real striped
// handshake, and the listener's batches (it sends on the session's first
// stripe, sequenced) reach the dialler complete and in partition order
// while the dialler's batches flow over every stripe the other way.
func TestDuplexOverStripes(t *testing.T) {
	checkGoroutines(t)
	p := getPKI(t)
	lo := p.server("hq-a")
	// The listener compresses what it sends back with zstd and trains
	// dictionaries, as a gateway does for links it is dialled on.
	lo.Codec, lo.Dictionaries = transport.CodecZstd, true
	lo.Accept = func(h *transport.Hello) (*transport.Welcome, error) {
		return &transport.Welcome{Gateway: "hq-a", Region: "hq", Window: 8 << 20, MaxBatchBytes: 1 << 20, Send: h.Receive}, nil
	}
	ln := listen(t, lo)
	do := p.client("v7-a", "hq-a")
	do.Codec, do.Stripes, do.Lanes = transport.CodecS2, 3, 2
	c, err := dial(t, ln, do, &transport.Hello{Gateway: "v7-a", Region: "vessel-7", Legs: []string{"v7-to-hq"},
		Receive: []string{"hq-to-v7"}, RecvWindow: 4 << 20, RecvMaxBatchBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	srv := accept(t, ln)
	s := &session{ln: ln, client: c, server: srv}
	if w := c.Welcome(); w.Version < transport.VersionDuplex || !slices.Equal(w.Send, []string{"hq-to-v7"}) {
		t.Fatalf("dialler's Welcome: version %d, send %q; want >= %d, [hq-to-v7]", w.Version, w.Send, transport.VersionDuplex)
	}
	if h := srv.Hello(); !slices.Equal(h.Receive, []string{"hq-to-v7"}) || h.RecvWindow != 4<<20 || h.RecvMaxBatchBytes != 1<<20 {
		t.Fatalf("listener's Hello: %+v", h)
	}
	waitStripes(t, s, 3)
	sendOrdered(t, srv, c, 6, 3, 1500)
	waitFor(t, 5*time.Second, "the listener's dictionary acknowledged", func() bool { return srv.txDicts.Acked() >= 1 })
	if n := c.rxDicts.Len(); n < 1 {
		t.Errorf("the dialler holds %d dictionaries of the listener's, want at least 1", n)
	}
	sendOrdered(t, c, srv, 6, 3, 1500)
}

// TestDuplexVersion3Dialler: a dialler that offers versions 1-3 sends no
// receive fields even when asked to (it would not know them), and gets a
// version 3 Welcome without a send list: today's one-direction session.
func TestDuplexVersion3Dialler(t *testing.T) {
	p := getPKI(t)
	lo := p.server("hq-a")
	var got *transport.Hello
	lo.Accept = func(h *transport.Hello) (*transport.Welcome, error) {
		got = h
		return &transport.Welcome{Gateway: "hq-a", Region: "hq", Send: h.Receive}, nil
	}
	ln := listen(t, lo)
	c, err := dial(t, ln, p.client("v7-a", "hq-a"), &transport.Hello{VersionMin: 1, VersionMax: 3, Gateway: "v7-a", Region: "vessel-7",
		Receive: []string{"hq-to-v7"}, RecvWindow: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	accept(t, ln)
	if w := c.Welcome(); w.Version != 3 || w.Send != nil {
		t.Fatalf("Welcome: version %d, send %q; want 3 and none", w.Version, w.Send)
	}
	if got.Receive != nil || got.RecvWindow != 0 {
		t.Fatalf("a version 1-3 Hello carried receive fields: %+v", got)
	}
}
