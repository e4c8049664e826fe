package mirror_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/config"
	"github.com/meridian-gw/meridian/topology"
	"github.com/meridian-gw/meridian/transport"
)

// shipFixture: region east is HQ (gateway ge), region west a ship behind
// NAT (gateway gw) with no listen address at all: nothing can dial it. The
// link says dial: west. Route r carries east's t.* topics to the ship
// (configuration, commands); route up carries the ship's u.* topics to
// HQ. up is the reverse view (source the ship's cluster, destination
// HQ's) for read-back.
func shipFixture(t *testing.T, parts int32) (down, up *fixture, dials *dialCounter) {
	t.Helper()
	down = newFixture(t, []string{"t.a", "t.b"}, parts, func(f *config.File) {
		f.Links[0].Dial = "west"
		f.Regions[1].Gateways[0].Listen, f.Regions[1].Gateways[0].Advertise = "", ""
		f.Routes = append(f.Routes, config.Route{Name: "up", From: "west/kafka", To: []string{"east/kafka"},
			Topics: config.TopicFilter{Include: []string{`^u\.`}}, Discover: 200 * time.Millisecond, Rename: "{topic}", StartAt: "earliest"})
	})
	// The ship's topics exist at its own cluster (down's destination).
	cl, err := kgo.NewClient(kgo.SeedBrokers(down.dst.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopics(context.Background(), parts, 1, nil, "u.a", "u.b"); err != nil {
		t.Fatal(err)
	}
	up = &fixture{src: down.dst, dst: down.src, topo: down.topo, net: down.net, topics: []string{"u.a", "u.b"}}
	dials = &dialCounter{by: map[string]int{}}
	down.wrapDial = dials.wrap
	return down, up, dials
}

// dialCounter counts the sessions gateways dial, by dialling gateway, and
// keeps the latest so that a test can cut it.
type dialCounter struct {
	mu   sync.Mutex
	by   map[string]int
	last transport.Conn
}

func (d *dialCounter) wrap(c transport.Conn) transport.Conn {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.by[c.Hello().Gateway]++
	d.last = c
	return c
}

func (d *dialCounter) count(gw string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.by[gw]
}

func (d *dialCounter) cut() {
	d.mu.Lock()
	c := d.last
	d.mu.Unlock()
	if c != nil {
		c.Close(errors.New("test: session cut"))
	}
}

// TestDuplexShipDialsHQ: a ship whose gateway cannot be dialled dials HQ,
// and the one session carries HQ's legs to the ship and the ship's legs to
// HQ, each exactly once by read-back of both destinations.
func TestDuplexShipDialsHQ(t *testing.T) {
	down, up, dials := shipFixture(t, 2)
	down.produce(t, 1500, 0)
	up.produce(t, 1500, 0)
	down.gateway(t, "ge", 0)
	down.gateway(t, "gw", 0)
	down.produce(t, 1500, 1500)
	up.produce(t, 1500, 1500)
	checkExact(t, down.waitMirrored(t, 3000, 30*time.Second), 3000)
	checkExact(t, up.waitMirrored(t, 3000, 30*time.Second), 3000)
	if n, m := dials.count("gw"), dials.count("ge"); n != 1 || m != 0 {
		t.Errorf("sessions dialled: ship %d, HQ %d; want 1 by the ship and none by HQ", n, m)
	}
	// Both gateways' status say the ship dialled.
	for _, gw := range []string{"ge", "gw"} {
		st := down.engine(gw).Status()
		if len(st.Peers) != 1 || st.Peers[0].DialledBy != "gw" || !st.Peers[0].Connected {
			t.Errorf("%s status peers = %+v, want one connected peer dialled by gw", gw, st.Peers)
		}
	}
}

// TestDuplexExactlyOnceAcrossCutsAndRestarts: while records flow both
// ways, the session is cut, the link blacks out for 500 ms, and each
// gateway is restarted once;
// both destinations end up with every record once, in order.
func TestDuplexExactlyOnceAcrossCutsAndRestarts(t *testing.T) {
	down, up, dials := shipFixture(t, 3)
	stopHQ := down.gateway(t, "ge", 256<<10)
	stopShip := down.gateway(t, "gw", 256<<10)
	const per = 1500
	total := 0
	for round := range 4 {
		down.produce(t, per, total)
		up.produce(t, per, total)
		total += per
		time.Sleep(150 * time.Millisecond) // some of it in flight
		switch round {
		case 0:
			dials.cut()
		case 2: // a blackout: the ship's redials fail until the link is back
			down.net.SetDown(true)
			time.Sleep(500 * time.Millisecond)
			down.net.SetDown(false)
		case 1:
			stopHQ()
			stopHQ = down.gateway(t, "ge", 256<<10)
		case 3:
			stopShip()
			stopShip = down.gateway(t, "gw", 256<<10)
		}
	}
	checkExact(t, down.waitMirrored(t, int64(total), 60*time.Second), int64(total))
	checkExact(t, up.waitMirrored(t, int64(total), 60*time.Second), int64(total))
	if n := dials.count("ge"); n != 0 {
		t.Errorf("HQ dialled %d sessions; it must never dial the ship", n)
	}
	_ = stopShip
}

// TestDuplexRefusesForeignLegs: HQ sends over a ship's session only legs
// that go from HQ to that ship; a dialler asking for another leg (or a
// gateway HQ sends nothing to) is refused with Error forbidden, and a
// rightful request is welcomed with the leg in Welcome.Send.
func TestDuplexRefusesForeignLegs(t *testing.T) {
	down, _, _ := shipFixture(t, 1)
	down.gateway(t, "ge", 0)
	eng := down.engine("ge")
	hello := func(receive ...string) *transport.Hello {
		return &transport.Hello{VersionMin: transport.VersionMin, VersionMax: transport.VersionMax,
			Gateway: "gw", Region: "west", Legs: []string{"up:east/kafka"}, Receive: receive}
	}
	w, err := eng.Accept(hello("r:west/kafka"))
	if err != nil || len(w.Send) != 1 || w.Send[0] != "r:west/kafka" {
		t.Fatalf("rightful request: got %+v, %v; want Welcome.Send [r:west/kafka]", w, err)
	}
	for _, leg := range []string{"up:east/kafka", "someone-else:west/kafka"} {
		_, err := eng.Accept(hello("r:west/kafka", leg))
		var terr *transport.Error
		if !errors.As(err, &terr) || terr.Code != transport.ErrCodeForbidden {
			t.Errorf("asking for %q: got %v, want Error forbidden", leg, err)
		}
	}
	// Over the wire: a ship session asking for a leg that is not HQ's to
	// it is refused at the handshake, and nothing is served.
	_, err = down.net.Dialer().Dial(context.Background(), "ge:1", hello("r:west/kafka", "up:east/kafka"))
	var terr *transport.Error
	if !errors.As(err, &terr) || terr.Code != transport.ErrCodeForbidden {
		t.Errorf("dialling HQ asking for up:east/kafka: got %v, want Error forbidden", err)
	}
	// HQ itself, as if it dialled itself, is sent nothing.
	_, err = eng.Accept(&transport.Hello{VersionMin: 1, VersionMax: transport.VersionMax, Gateway: "ge", Region: "east",
		Receive: []string{"r:west/kafka"}})
	if err == nil {
		t.Error("a gateway HQ sends nothing to was welcomed to receive r:west/kafka")
	}
}

// TestDuplexVersion3Peer: a ship that speaks versions 1-3 gets today's
// one-direction session: its legs reach HQ exactly once; HQ's legs to it
// wait (HQ never dials it).
func TestDuplexVersion3Peer(t *testing.T) {
	down, up, dials := shipFixture(t, 1)
	var v3 atomic.Int64
	down.wrapDial = func(c transport.Conn) transport.Conn {
		if c.Welcome().Version == 3 {
			v3.Add(1)
		}
		return dials.wrap(c)
	}
	down.wrapHello = func(h *transport.Hello) {
		h.VersionMax, h.Receive, h.RecvWindow, h.RecvMaxBatchBytes = 3, nil, 0, 0
	}
	down.gateway(t, "ge", 0)
	down.gateway(t, "gw", 0)
	up.produce(t, 500, 0)
	down.produce(t, 500, 0)
	checkExact(t, up.waitMirrored(t, 500, 30*time.Second), 500)
	if v3.Load() == 0 {
		t.Fatal("no version 3 session")
	}
	time.Sleep(500 * time.Millisecond)
	cl, err := kgo.NewClient(kgo.SeedBrokers(down.dst.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(context.Background(), down.topics...)
	if err != nil {
		t.Fatal(err)
	}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil && o.Offset > 0 {
			t.Errorf("HQ's legs reached a version 3 ship: %s[%d] holds %d records", o.Topic, o.Partition, o.Offset)
		}
	})
	if n := dials.count("ge"); n != 0 {
		t.Errorf("HQ dialled %d sessions; it must never dial the ship", n)
	}
}

// TestDuplexServesOnlyAskedLegs: HQ sends a dialled session only the legs
// the ship asked for (a ship whose Hello leaves one out, as one running an
// older topology would): the asked leg flows exactly once and the session
// is not torn down by a leg the ship did not ask for.
func TestDuplexServesOnlyAskedLegs(t *testing.T) {
	var down *fixture
	down, _, dials := shipFixture(t, 1)
	// A second route from HQ to the ship, over s.* topics.
	f2 := *down.file
	f2.Routes = append(append([]config.Route(nil), down.file.Routes...), config.Route{Name: "r2", From: "east/kafka", To: []string{"west/kafka"},
		Topics: config.TopicFilter{Include: []string{`^s\.`}}, Discover: 200 * time.Millisecond, Rename: "{topic}", StartAt: "earliest"})
	topo, err := topology.New(&f2)
	if err != nil {
		t.Fatal(err)
	}
	down.topo = topo
	cl, err := kgo.NewClient(kgo.SeedBrokers(down.src.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopics(context.Background(), 1, 1, nil, "s.a"); err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: "s.a", Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	down.wrapHello = func(h *transport.Hello) { h.Receive = []string{"r:west/kafka"} }
	down.gateway(t, "ge", 0)
	down.gateway(t, "gw", 0)
	down.produce(t, 1000, 0)
	checkExact(t, down.waitMirrored(t, 1000, 30*time.Second), 1000)
	time.Sleep(time.Second)
	if n := dials.count("gw"); n != 1 {
		t.Errorf("the ship dialled %d sessions, want 1 (a leg it did not ask for must not end the session)", n)
	}
}

// TestDuplexReceiveOnlyShip: a ship that sends nothing (its only route is
// HQ's to it) still dials HQ, only to receive, and HQ's records arrive
// exactly once.
func TestDuplexReceiveOnlyShip(t *testing.T) {
	f := newFixture(t, []string{"t.a", "t.b"}, 2, func(f *config.File) {
		f.Links[0].Dial = "west"
		f.Regions[1].Gateways[0].Listen, f.Regions[1].Gateways[0].Advertise = "", ""
	})
	dials := &dialCounter{by: map[string]int{}}
	f.wrapDial = dials.wrap
	f.gateway(t, "ge", 0)
	f.gateway(t, "gw", 0)
	f.produce(t, 2000, 0)
	checkExact(t, f.waitMirrored(t, 2000, 30*time.Second), 2000)
	if n, m := dials.count("gw"), dials.count("ge"); n != 1 || m != 0 {
		t.Errorf("sessions dialled: ship %d, HQ %d; want 1 by the ship and none by HQ", n, m)
	}
}
