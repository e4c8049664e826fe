package config

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// splitReceiverWarnings warns at each route destination that more than
// one gateway of the destination region would receive at once: two links
// between the regions whose receiving ends name different gateways (one
// pinned to west-b, another unpinned, whose receiver is west's first
// gateway), each carried by a different sending gateway. Both receivers
// would write the leg with the same transactional IDs and fence each
// other's transactions in turn: nothing written twice, little written
// (docs/sharing.md).
func splitReceiverWarnings(f *File, warn func(path, format string, args ...any)) {
	gateways := map[string][]string{} // region → gateway names in file order
	for _, r := range f.Regions {
		for _, g := range r.Gateways {
			gateways[r.Name] = append(gateways[r.Name], g.Name)
		}
	}
	end := func(ref string) (region, gateway string) {
		region, gateway, _ = strings.Cut(ref, "/")
		return region, gateway
	}
	for i, rt := range f.Routes {
		src, _, _ := strings.Cut(rt.From, "/")
		for j, to := range rt.To {
			dst, _, _ := strings.Cut(to, "/")
			if dst == src || len(gateways[dst]) == 0 {
				continue
			}
			// The links between src and dst, each as (src end, dst end).
			type ends struct{ name, s, d string }
			var links []ends
			for k, l := range f.Links {
				if len(l.Between) != 2 || l.Transport == "amqp" {
					continue
				}
				ar, ag := end(l.Between[0])
				br, bg := end(l.Between[1])
				name := l.Name
				if name == "" {
					name = fmt.Sprintf("links[%d]", k)
				}
				switch {
				case ar == src && br == dst:
					links = append(links, ends{name, ag, bg})
				case br == src && ar == dst:
					links = append(links, ends{name, bg, ag})
				}
			}
			hops := map[string][]string{} // receiving gateway → "sender over link"
			for _, g := range gateways[src] {
				var carry *ends
				for k := range links {
					if links[k].s == g {
						carry = &links[k]
						break
					}
				}
				if carry == nil {
					for k := range links {
						if links[k].s == "" {
							carry = &links[k]
							break
						}
					}
				}
				if carry == nil {
					continue
				}
				hop := carry.d
				if hop == "" {
					hop = gateways[dst][0]
				}
				hops[hop] = append(hops[hop], g+" over "+carry.name)
			}
			if len(hops) < 2 {
				continue
			}
			var parts []string
			for _, h := range slices.Sorted(maps.Keys(hops)) {
				parts = append(parts, h+" (from "+strings.Join(hops[h], ", ")+")")
			}
			warn(fmt.Sprintf("routes[%d].to[%d]", i, j),
				"%s is received by %d gateways at once: %s; they write it with the same transactional IDs and fence each other's transactions in turn (nothing twice, little at all): pin the links' %s ends to one gateway, or leave them unpinned",
				to, len(hops), strings.Join(parts, "; "), dst)
		}
	}
}
