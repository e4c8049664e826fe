package mirror

import (
	"testing"

	"github.com/meridian-gw/meridian/routing"
	"github.com/meridian-gw/meridian/topology"
	"github.com/meridian-gw/meridian/transport"
)

// A session over the relay path is capped by the lowest rate limit set on
// the path's links, not by the direct link's.
func TestRelayRateLimit(t *testing.T) {
	direct := &topology.Link{Name: "ship--hq", RateLimit: 5e6}
	p := &outPeer{peer: &routing.Peer{Link: direct}}
	relay := &pathSwitch{relay: &routing.Path{Links: []*topology.Link{{Name: "ship--dr", RateLimit: 0}, {Name: "dr--hq", RateLimit: 3e6}}}}
	var conn nopConn
	for _, tc := range []struct {
		what string
		got  int64
		want int64
	}{
		{"direct", p.rateLimit(&conn), 5e6},
		{"relayed", p.rateLimit(relayConn{&conn, relay}), 3e6},
		{"relayed, no caps", p.rateLimit(relayConn{&conn, &pathSwitch{relay: &routing.Path{Links: []*topology.Link{{}, {}}}}}), 0},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: got %d, want %d", tc.what, tc.got, tc.want)
		}
	}
}

// nopConn is a session that rateLimit only looks at the type of.
type nopConn struct{ transport.Conn }
