package gateway_test

import (
	"strings"
	"testing"

	"github.com/meridian-gw/meridian/internal/gateway"
	"github.com/meridian-gw/meridian/topology"
	"github.com/meridian-gw/meridian/topology/topologytest"
)

// amqpEndpointFile is a topology with an amqp cluster as a route's source
// (plant/broker to hq/kafka) and as a route's sink (hq/kafka to
// plant/broker), over an amqp link.
const amqpEndpointFile = `version: 1
regions:
  - name: plant
    clusters:
      - name: broker
        kind: amqp
        amqp: {url: "amqp://127.0.0.1:1", addresses: [events, commands]}
    gateways: [{name: ga}]
  - name: hq
    clusters: [{name: kafka, kind: kafka, bootstrap: ["127.0.0.1:1"]}]
    gateways: [{name: gh}]
links:
  - {between: [plant, hq], transport: amqp, amqp: {url: "amqp://127.0.0.1:1"}}
routes:
  - {name: events, from: plant/broker, to: [hq/kafka], topics: {include: ['^events$']}}
  - {name: commands, from: hq/kafka, to: [plant/broker], topics: {include: ['^commands$']}}
`

// TestAMQPEndpointsBuild: gateway.New (what validate runs) accepts an
// amqp cluster as a source, and as a destination only for a gateway with
// a state_dir (where the sink keeps its progress), naming the setting.
func TestAMQPEndpointsBuild(t *testing.T) {
	topo, err := topology.New(topologytest.File(t, "amqp-endpoints.yaml", amqpEndpointFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ gw, want string }{
		{"ga", "regions[0].gateways[0].state_dir: missing; gateway ga writes amqp cluster plant/broker"},
		{"gh", ""},
	} {
		_, err := gateway.New(gateway.Options{Topology: topo, Name: tt.gw, AdminAddr: "-"})
		got := ""
		if err != nil {
			got = err.Error()
		}
		if tt.want == "" && err != nil || !strings.Contains(got, tt.want) {
			t.Errorf("gateway %s: got %q, want %q", tt.gw, got, tt.want)
		}
	}
}
