package routing_test

import (
	"testing"

	"github.com/meridian-gw/meridian/config"
	"github.com/meridian-gw/meridian/routing"
	"github.com/meridian-gw/meridian/topology"
)

// A ship that both sends its legs to hq-a and receives hq-a's legs over
// the session it dials has hq-b as a standby receiver, whichever route
// the file lists first (the peer exists already for the legs it
// receives when the first leg to send it comes).
func TestStandbyOfAPeerThatAlsoSends(t *testing.T) {
	f, err := config.LoadWith("../examples/satellite-fleet.yaml", config.Options{LookupEnv: func(string) (string, bool) { return "x", true }})
	if err != nil {
		t.Fatal(err)
	}
	topo, err := topology.New(f)
	if err != nil {
		t.Fatal(err)
	}
	tab, err := routing.Compile(topo, "vessel-7-a")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range tab.Out {
		if p.Gateway.Name != "hq-a" {
			continue
		}
		if len(p.Legs) == 0 || len(p.Receive) == 0 {
			t.Fatalf("peer hq-a: %d legs sent, %d received; want both", len(p.Legs), len(p.Receive))
		}
		if len(p.Standby) != 1 || p.Standby[0].Name != "hq-b" {
			t.Fatalf("peer hq-a's standby receivers: %v; want [hq-b]", p.Standby)
		}
		return
	}
	t.Fatal("vessel-7-a sends nothing to hq-a")
}
