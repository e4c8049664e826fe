package membership

import (
	"sort"

	"github.com/meridian-gw/meridian/topology"
)

// Seeds are the join addresses of every gateway of topo other than self,
// sorted by name, each written "NAME/ADDR" (memberlist's Join form, which
// carries the node name so that a transport can check it against the
// peer's certificate). addr gives a gateway's gossip address; gateways
// for which it returns "" are left out. keep selects gateways (nil: all):
// a region pool seeds from its own region only.
//
// There is no seed list of its own to keep in sync: the topology file is
// the seed list.
func Seeds(topo *topology.Topology, self string, keep func(*topology.Gateway) bool, addr func(*topology.Gateway) string) []string {
	var out []string
	for name, g := range topo.Gateways {
		if name == self || (keep != nil && !keep(g)) {
			continue
		}
		if a := addr(g); a != "" {
			out = append(out, name+"/"+a)
		}
	}
	sort.Strings(out)
	return out
}
