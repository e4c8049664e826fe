package mirror_test

import (
	"context"
	"errors"
	"testing"

	"github.com/meridian-gw/meridian/mirror"
	"github.com/meridian-gw/meridian/routing"
	"github.com/meridian-gw/meridian/topology/topologytest"
	"github.com/meridian-gw/meridian/transport"
)

// relayTopology: ship dials hq and dr (pinned at dr to dr-b), dr dials
// hq, and eu dials hq; route t carries ship/kafka to hq/kafka and route e
// eu/kafka to hq/kafka.
const relayTopology = `
version: 1
regions:
  - name: ship
    clusters: [{name: kafka, kind: kafka, bootstrap: ["127.0.0.1:9092"]}]
    gateways: [{name: ship-a, tls: {ca_file: ca.crt, cert_file: ship-a.crt, key_file: ship-a.key}}]
  - name: hq
    clusters: [{name: kafka, kind: kafka, bootstrap: ["127.0.0.1:9093"]}]
    gateways: [{name: hq-a, listen: "127.0.0.1:7411", tls: {ca_file: ca.crt, cert_file: hq-a.crt, key_file: hq-a.key}}]
  - name: dr
    clusters: [{name: kafka, kind: kafka, bootstrap: ["127.0.0.1:9094"]}]
    gateways: [{name: dr-a, listen: "127.0.0.1:7421", tls: {ca_file: ca.crt, cert_file: dr-a.crt, key_file: dr-a.key}}, {name: dr-b, listen: "127.0.0.1:7422", tls: {ca_file: ca.crt, cert_file: dr-b.crt, key_file: dr-b.key}}]
  - name: eu
    clusters: [{name: kafka, kind: kafka, bootstrap: ["127.0.0.1:9095"]}]
    gateways: [{name: eu-a, tls: {ca_file: ca.crt, cert_file: eu-a.crt, key_file: eu-a.key}}]
links:
  - {between: [ship, hq], dial: ship}
  - {between: [ship, dr/dr-b], dial: ship}
  - {between: [dr, hq], dial: dr}
  - {between: [eu, hq], dial: eu}
routes:
  - {name: t, from: ship/kafka, to: [hq/kafka], topics: {include: ['^t\.']}}
  - {name: e, from: eu/kafka, to: [hq/kafka], topics: {include: ['^e\.']}}
`

// TestRelayAccept checks the trust boundary of relayed sessions at both
// ends, through Engine.Accept (what the listener calls on every Hello):
// a relay takes only legs it may relay for the gateway that dials it, and
// the destination takes a relayed leg only from the relay on the
// topology's path, on behalf of a gateway that may send it.
func TestRelayAccept(t *testing.T) {
	topo := topologytest.Parse(t, relayTopology)
	engine := func(name string) *mirror.Engine {
		tab, err := routing.Compile(topo, name)
		if err != nil {
			t.Fatal(err)
		}
		e, err := mirror.New(mirror.Options{Table: tab,
			Dial: func(context.Context, string, *transport.Hello) (transport.Conn, error) {
				return nil, errors.New("no dialling in this test")
			},
			Listen: func(transport.Accept) (transport.Listener, error) {
				return nil, errors.New("no listening in this test")
			}})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	hello := func(gw, region, origin string, maxV uint16, legs ...string) *transport.Hello {
		return &transport.Hello{VersionMin: transport.VersionMin, VersionMax: maxV, Gateway: gw, Region: region, Legs: legs, Origin: origin}
	}
	const v = transport.VersionMax
	for _, tc := range []struct {
		name  string
		at    string
		hello *transport.Hello
		code  uint16 // 0: accepted
	}{
		{"relay takes the ship's leg", "dr-b", hello("ship-a", "ship", "", v, "t:hq/kafka"), 0},
		{"the other dr gateway is not on the path", "dr-a", hello("ship-a", "ship", "", v, "t:hq/kafka"), transport.ErrCodeUnknownLeg},
		{"relay refuses a leg of another region", "dr-b", hello("eu-a", "eu", "", v, "t:hq/kafka"), transport.ErrCodeUnknownLeg},
		{"relay refuses a leg it has no path for", "dr-b", hello("eu-a", "eu", "", v, "e:hq/kafka"), transport.ErrCodeUnknownLeg},
		{"relay needs version 5", "dr-b", hello("ship-a", "ship", "", transport.VersionDuplex, "t:hq/kafka"), transport.ErrCodeVersion},
		{"relayed sessions are one way", "dr-b", &transport.Hello{VersionMin: 1, VersionMax: v, Gateway: "ship-a", Region: "ship",
			Legs: []string{"t:hq/kafka"}, Receive: []string{"x"}}, transport.ErrCodeForbidden},
		{"destination takes the leg from the relay on the path", "hq-a", hello("dr-b", "dr", "ship-a", v, "t:hq/kafka"), 0},
		{"destination refuses a relay off the path", "hq-a", hello("dr-a", "dr", "ship-a", v, "t:hq/kafka"), transport.ErrCodeForbidden},
		{"destination refuses the relay without an origin", "hq-a", hello("dr-b", "dr", "", v, "t:hq/kafka"), transport.ErrCodeForbidden},
		{"destination refuses an origin that may not send the leg", "hq-a", hello("dr-b", "dr", "eu-a", v, "t:hq/kafka"), transport.ErrCodeForbidden},
		{"destination refuses a leg with no relay path", "hq-a", hello("dr-b", "dr", "eu-a", v, "e:hq/kafka"), transport.ErrCodeForbidden},
		{"destination refuses an unknown origin", "hq-a", hello("dr-b", "dr", "nobody", v, "t:hq/kafka"), transport.ErrCodeForbidden},
		{"a gateway relays for itself only via the topology", "hq-a", hello("eu-a", "eu", "ship-a", v, "t:hq/kafka"), transport.ErrCodeForbidden},
		{"the ship still feeds its leg directly", "hq-a", hello("ship-a", "ship", "", v, "t:hq/kafka"), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, err := engine(tc.at).Accept(tc.hello)
			if tc.code == 0 {
				if err != nil || w == nil || w.Gateway != tc.at {
					t.Fatalf("got %v, %v; want a Welcome from %s", w, err, tc.at)
				}
				return
			}
			var te *transport.Error
			if !errors.As(err, &te) || te.Code != tc.code {
				t.Fatalf("got %v, %v; want a transport error with code %d", w, err, tc.code)
			}
			t.Logf("refused: %v", te)
		})
	}
}
