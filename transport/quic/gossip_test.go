package quic

import (
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

func gossipPair(t *testing.T, dialable bool) (a, b *Gossip) {
	t.Helper()
	p := getPKI(t)
	mk := func(name string) *Gossip {
		g, err := ListenGossip("127.0.0.1:0", GossipOptions{
			ServerTLS: p.ca.ServerConfig(p.certs[name]), ClientTLS: p.ca.ClientConfig(p.certs[name], ""),
			Member:   func(n string) bool { return n == "hq-a" || n == "v7-a" },
			Dialable: func(n string) bool { return dialable || n != "v7-a" },
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { g.Shutdown() })
		return g
	}
	return mk("hq-a"), mk("v7-a")
}

func recvPacket(t *testing.T, g *Gossip) *memberlist.Packet {
	t.Helper()
	select {
	case p := <-g.PacketCh():
		return p
	case <-time.After(5 * time.Second):
		t.Fatal("no packet")
		return nil
	}
}

// TestGossipPackets: a small packet travels as a datagram, a packet too
// big for one on a stream of its own; the site that cannot be dialled is
// answered over the connection it opened; Shutdown is idempotent.
func TestGossipPackets(t *testing.T) {
	hq, v7 := gossipPair(t, false)
	hqAddr := memberlist.Address{Name: "hq-a", Addr: hq.Addr().String()}
	if _, err := v7.WriteToAddress([]byte("ping"), hqAddr); err != nil {
		t.Fatal(err)
	}
	if p := recvPacket(t, hq); string(p.Buf) != "ping" {
		t.Fatalf("got %q", p.Buf)
	}
	big := bytes.Repeat([]byte("x"), 5000)
	if _, err := v7.WriteToAddress(big, hqAddr); err != nil {
		t.Fatal(err)
	}
	if p := recvPacket(t, hq); !bytes.Equal(p.Buf, big) {
		t.Fatalf("big packet: got %d bytes", len(p.Buf))
	}
	// hq-a answers v7-a, which it may not dial, over v7-a's connection;
	// the advertised address is not used.
	if _, err := hq.WriteToAddress([]byte("ack"), memberlist.Address{Name: "v7-a", Addr: "192.0.2.1:9"}); err != nil {
		t.Fatal(err)
	}
	if p := recvPacket(t, v7); string(p.Buf) != "ack" {
		t.Fatalf("got %q", p.Buf)
	}
	// A stream, both ways.
	c, err := hq.DialAddressTimeout(memberlist.Address{Name: "v7-a", Addr: "192.0.2.1:9"}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("push")); err != nil {
		t.Fatal(err)
	}
	var s interface {
		Read([]byte) (int, error)
		Write([]byte) (int, error)
		Close() error
	}
	select {
	case s = <-v7.StreamCh():
	case <-time.After(5 * time.Second):
		t.Fatal("no stream")
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "push" {
		t.Fatalf("stream read %q, %v", buf, err)
	}
	if _, err := s.Write([]byte("pull")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "pull" {
		t.Fatalf("stream reply %q, %v", buf, err)
	}
	c.Close()
	s.Close()
	st := v7.Stats()
	if st.PacketsSent != 2 || st.PacketsRecv != 1 || st.BytesSent["hq-a"] < int64(5004) {
		t.Errorf("v7-a stats %+v", st)
	}
	// Nobody has a connection to an unknown name: the packet is dropped,
	// not an error (like UDP), and counted.
	if _, err := hq.WriteToAddress([]byte("x"), memberlist.Address{Addr: "127.0.0.1:9"}); err != nil {
		t.Errorf("packet to an unnamed address: %v", err)
	}
	if hq.Stats().Dropped != 1 {
		t.Errorf("dropped = %d, want 1", hq.Stats().Dropped)
	}
	if err := hq.Shutdown(); err != nil {
		t.Error(err)
	}
	if err := hq.Shutdown(); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
	if _, err := hq.WriteToAddress([]byte("x"), hqAddr); err == nil {
		t.Error("write after Shutdown worked")
	}
}

// TestGossipWrongName: a peer dialled as hq-a whose certificate names
// another gateway is refused.
func TestGossipWrongName(t *testing.T) {
	hq, v7 := gossipPair(t, true)
	_, err := v7.DialAddressTimeout(memberlist.Address{Name: "dr-a", Addr: hq.Addr().String()}, 3*time.Second)
	if err == nil {
		t.Fatal("dialled hq-a as dr-a")
	}
	t.Log(err)
}
