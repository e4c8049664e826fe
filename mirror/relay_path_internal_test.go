package mirror

import (
	"testing"
	"time"

	"github.com/meridian-gw/meridian/routing"
	"github.com/meridian-gw/meridian/topology"
	"github.com/meridian-gw/meridian/transport"
)

// A session over the relay path is capped by the lowest rate limit set on
// the path's links, not by the direct link's.
func TestRelayRateLimit(t *testing.T) {
	direct := &topology.Link{Name: "ship--hq", RateLimit: 5e6}
	p := &outPeer{peer: &routing.Peer{Link: direct}}
	relay := &routing.Path{Links: []*topology.Link{{Name: "ship--dr", RateLimit: 0}, {Name: "dr--hq", RateLimit: 3e6}}}
	var conn nopConn
	for _, tc := range []struct {
		what string
		got  int64
		want int64
	}{
		{"direct", p.rateLimit(&conn), 5e6},
		{"relayed", p.rateLimit(relayConn{&conn, nil, relay}), 3e6},
		{"relayed, no caps", p.rateLimit(relayConn{&conn, nil, &routing.Path{Links: []*topology.Link{{}, {}}}}), 0},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: got %d, want %d", tc.what, tc.got, tc.want)
		}
	}
}

// nopConn is a session that rateLimit only looks at the type of.
type nopConn struct{ transport.Conn }

// A protocol violation on a relayed session is held against its origin:
// the destination then refuses the origin's sessions, relayed or direct,
// and still takes the relay's own.
func TestRelayOffender(t *testing.T) {
	for _, tc := range []struct {
		h    *transport.Hello
		want string
	}{
		{&transport.Hello{Gateway: "dr-a", Origin: "ship-a"}, "ship-a"},
		{&transport.Hello{Gateway: "ship-a"}, "ship-a"},
		{&transport.Hello{Gateway: "dr-a"}, "dr-a"},
	} {
		if got := offender(tc.h); got != tc.want {
			t.Errorf("offender(%+v): got %s, want %s", tc.h, got, tc.want)
		}
	}
	var p penalties
	p.first = time.Second
	p.violated(offender(&transport.Hello{Gateway: "dr-a", Origin: "ship-a"}))
	if _, ok := p.refused("ship-a"); !ok {
		t.Error("the origin is not refused after its relayed session broke the protocol")
	}
	if _, ok := p.refused("dr-a"); ok {
		t.Error("the relay is refused for what it carried for the origin")
	}
}
