package mirror_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/config"
	"github.com/meridian-gw/meridian/transport"
)

// northRegion adds a third site, region north with gateway gn, linked to
// west and feeding it through route rn: gn holds a valid certificate of the
// fleet, but only for its own region's legs.
func northRegion(f *config.File) {
	f.Regions = append(f.Regions, config.Region{
		Name:     "north",
		Clusters: []config.Cluster{{Name: "kafka", Kind: "kafka", Bootstrap: f.Regions[0].Clusters[0].Bootstrap}},
		Gateways: []config.Gateway{{Name: "gn", Listen: "gn:1"}},
	})
	f.Links = append(f.Links, config.Link{Name: "north--west", Between: []string{"north", "west"}, Profile: "lan", Compression: "zstd"})
	f.Routes = append(f.Routes, config.Route{Name: "rn", From: "north/kafka", To: []string{"west/kafka"},
		Topics: config.TopicFilter{Include: []string{`^n\.`}}, Discover: 200 * time.Millisecond})
}

// dialAs opens a session to the receiving gateway gw as gateway name of
// region, claiming legs, as a peer holding name's certificate would.
func dialAs(t *testing.T, f *fixture, name, region string, legs ...string) (transport.Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return f.net.Dialer().Dial(ctx, f.topo.Gateways["gw"].Advertise, &transport.Hello{
		VersionMin: transport.VersionMin, VersionMax: transport.VersionMax,
		Gateway: name, Region: region, Legs: legs,
	})
}

func wantCode(t *testing.T, err error, code uint16, what string) {
	t.Helper()
	var te *transport.Error
	if !errors.As(err, &te) || te.Code != code {
		t.Fatalf("%s: got %v, want a transport error with code %d", what, err, code)
	}
}

// destAdmin is an admin client of the destination cluster, closed when the
// test ends.
func destAdmin(t *testing.T, f *fixture) *kadm.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(f.dst.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

// firstResume reads the Resume a receiver sends when a session starts.
func firstResume(t *testing.T, ctx context.Context, conn transport.Conn) *transport.Resume {
	t.Helper()
	fr, err := conn.Recv(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rs, ok := fr.(*transport.Resume)
	if !ok {
		t.Fatalf("first frame is %T, want a Resume", fr)
	}
	return rs
}

// noDestTopic fails the test if the destination has topic.
func noDestTopic(t *testing.T, f *fixture, topic string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	td, err := destAdmin(t, f).ListTopics(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if d, ok := td[topic]; ok && d.Err == nil {
		t.Fatalf("destination topic %s exists (%d partitions): a refused peer wrote to the destination", topic, len(d.Partitions))
	}
}

// A site's certificate (gateway gn of region north) claiming the leg of
// another site (route r, from east) is refused at Hello with
// ErrCodeForbidden, and nothing reaches the destination; so is a gateway
// the topology does not know, and a Hello naming a region other than the
// gateway's.
func TestPeerMayOnlyClaimItsOwnRegionsLegs(t *testing.T) {
	f := newFixture(t, []string{"t.a"}, 2, northRegion)
	f.gateway(t, "gw", 0)
	leg := "r:west/kafka"
	conn, err := dialAs(t, f, "gn", "north", leg)
	if err == nil {
		// Without authorization the session is served: try the attack
		// through, so that the destination check below sees its effect.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if fr, rerr := conn.Recv(ctx); rerr == nil {
			if rs, ok := fr.(*transport.Resume); ok {
				conn.Send(ctx, &transport.Topic{Leg: leg, Name: "t.a", Partitions: 2})
				conn.Send(ctx, &transport.Batch{Leg: leg, Gen: rs.Gen, Seq: 1, Topic: "t.a", NextOffset: 1, HighWatermark: 1,
					Records: []transport.Record{{Offset: 0, Timestamp: time.Now().UnixMilli(), Value: []byte("forged")}}})
				time.Sleep(2 * time.Second)
			}
		}
		conn.Close(nil)
		noDestTopic(t, f, "t.a")
	}
	wantCode(t, err, transport.ErrCodeForbidden, "gn claiming east's leg")
	_, err = dialAs(t, f, "intruder", "east", leg)
	wantCode(t, err, transport.ErrCodeForbidden, "a gateway not in the topology")
	_, err = dialAs(t, f, "gn", "east", "rn:west/kafka")
	wantCode(t, err, transport.ErrCodeForbidden, "gn claiming region east")
	// Its own leg is accepted.
	conn, err = dialAs(t, f, "gn", "north", "rn:west/kafka")
	if err != nil {
		t.Fatalf("gn claiming its own leg: %v", err)
	}
	conn.Close(nil)
	noDestTopic(t, f, "t.a")
	for reason, want := range map[string]float64{"forbidden_leg": 1, "wrong_region": 1} {
		if got := f.counter(t, "gw", "meridian_link_sessions_refused_total", map[string]string{"peer": "gn", "reason": reason}); got != want {
			t.Errorf("sessions refused {peer=gn, reason=%s} = %v, want %v", reason, got, want)
		}
	}
	if got := f.counter(t, "gw", "meridian_link_sessions_refused_total", map[string]string{"peer": "intruder", "reason": "unknown_gateway"}); got != 1 {
		t.Errorf("sessions refused {peer=intruder, reason=unknown_gateway} = %v, want 1", got)
	}
}

// Within an accepted session, a frame for a leg outside the session's
// Hello (even one routed to this gateway) ends the session with a protocol
// error and is not applied; so does a frame only a receiver sends.
func TestFramesOutsideTheSessionsLegsAreProtocolErrors(t *testing.T) {
	f := newFixture(t, []string{"t.a"}, 2, northRegion)
	f.tuning.Penalty = 20 * time.Millisecond // each case redials as gn after its violation
	f.gateway(t, "gw", 0)
	own := "rn:west/kafka"
	for i, fr := range []transport.Frame{
		&transport.Topic{Leg: "r:west/kafka", Name: "t.a", Partitions: 2},
		&transport.Groups{Leg: "r:west/kafka", Offsets: []transport.GroupOffset{{Group: "g", Topic: "t.a", Offset: 1}}},
		&transport.Batch{Leg: "r:west/kafka", Seq: 1, Topic: "t.a", NextOffset: 1, Records: []transport.Record{{Value: []byte("x")}}},
		&transport.Ack{Seqs: []uint64{1}},
		&transport.Resume{Leg: own, Gen: 99},
	} {
		t.Run(strconv.Itoa(i)+"-"+transport.TypeOf(fr).String(), func(t *testing.T) {
			// The previous case's violation is penalised: gn is refused
			// (code limit) until the penalty, doubled per violation, ends.
			var conn transport.Conn
			deadline := time.Now().Add(10 * time.Second)
			for {
				var err error
				conn, err = dialAs(t, f, "gn", "north", own)
				if err == nil {
					break
				}
				if i == 0 || time.Now().After(deadline) {
					t.Fatal(err)
				}
				wantCode(t, err, transport.ErrCodeLimit, "redial after a violation")
				time.Sleep(10 * time.Millisecond)
			}
			defer conn.Close(nil)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := conn.Send(ctx, fr); err != nil {
				t.Fatal(err)
			}
			for {
				got, err := conn.Recv(ctx)
				if err != nil {
					wantCode(t, err, transport.ErrCodeProtocol, "after the frame")
					break
				}
				if e, ok := got.(*transport.Error); ok {
					wantCode(t, e, transport.ErrCodeProtocol, "after the frame")
					break
				}
				if tr, ok := got.(*transport.TopicReady); ok {
					t.Fatalf("the receiver prepared a topic for a foreign leg: %+v", tr)
				}
			}
			noDestTopic(t, f, "t.a")
		})
	}
	if got := f.counter(t, "gw", "meridian_link_sessions_refused_total", map[string]string{"peer": "gn", "reason": "penalty"}); got == 0 {
		t.Error("no redial of gn was refused as a penalty after its violations")
	}
	for reason, want := range map[string]float64{"foreign_leg": 3, "receiver_frame": 2} {
		if got := f.counter(t, "gw", "meridian_link_protocol_violations_total", map[string]string{"peer": "gn", "reason": reason}); got != want {
			t.Errorf("protocol violations {peer=gn, reason=%s} = %v, want %v", reason, got, want)
		}
	}
}

// counter is the value of the counter (or gauge) series name{labels} in
// gateway gw's metrics (0 when absent).
func (f *fixture) counter(t *testing.T, gw, name string, labels map[string]string) float64 {
	t.Helper()
	f.mu.Lock()
	reg := f.regs[gw]
	f.mu.Unlock()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue series
				}
			}
			if g := m.GetGauge(); g != nil {
				return g.GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}
