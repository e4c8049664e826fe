package gateway

import (
	"errors"
	"strings"
	"testing"

	"github.com/meridian-gw/meridian/topology/membership"
	"github.com/meridian-gw/meridian/topology/topologytest"
)

// TestMemberMetaTooBig: a gateway whose memberlist metadata would exceed
// 512 bytes does not build, and the error names it at its setting. Names
// in a file are capped at 63 characters, so the topology is changed in
// code to get there.
func TestMemberMetaTooBig(t *testing.T) {
	topo := topologytest.Parse(t, topologytest.Shape([]string{
		topologytest.Region("hq", 7010, "a"),
		topologytest.Region("dr", 7020, "a"),
	}, "  - {between: [hq, dr]}\n", ""))
	if _, err := New(Options{Topology: topo, Name: "hq-a"}); err != nil {
		t.Fatalf("New with short names: %v", err)
	}
	topo.Regions["hq"].Name = strings.Repeat("h", 500)
	_, err := New(Options{Topology: topo, Name: "hq-a"})
	var se *SettingError
	if !errors.Is(err, membership.ErrMetaTooBig) || !errors.As(err, &se) || se.Path != "regions[0].gateways[0]" ||
		!strings.Contains(err.Error(), "gateway hq-a") {
		t.Fatalf("New with a 500-byte region name: %v", err)
	}
}
