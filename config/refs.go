package config

import "strings"

// SplitRef splits a reference such as "hq/kafka" into its region and
// name. ok is false unless ref has exactly one "/" with text on both sides.
func SplitRef(ref string) (region, name string, ok bool) {
	region, name, ok = strings.Cut(ref, "/")
	if !ok || region == "" || name == "" || strings.Contains(name, "/") {
		return "", "", false
	}
	return region, name, true
}

// Region returns the region with the given name.
func (f *File) Region(name string) (*Region, bool) {
	for i := range f.Regions {
		if f.Regions[i].Name == name {
			return &f.Regions[i], true
		}
	}
	return nil, false
}

// Cluster resolves a "region/cluster" reference. The pointers point into f.
func (f *File) Cluster(ref string) (*Region, *Cluster, bool) {
	rn, cn, ok := SplitRef(ref)
	if !ok {
		return nil, nil, false
	}
	r, ok := f.Region(rn)
	if !ok {
		return nil, nil, false
	}
	for i := range r.Clusters {
		if r.Clusters[i].Name == cn {
			return r, &r.Clusters[i], true
		}
	}
	return nil, nil, false
}

// Gateway finds a gateway by name (unique across a valid file) or by a
// "region/gateway" reference as used in link endpoints. The pointers point
// into f.
func (f *File) Gateway(name string) (*Region, *Gateway, bool) {
	region := ""
	if strings.Contains(name, "/") {
		var ok bool
		if region, name, ok = SplitRef(name); !ok {
			return nil, nil, false
		}
	}
	for i := range f.Regions {
		r := &f.Regions[i]
		if region != "" && r.Name != region {
			continue
		}
		for j := range r.Gateways {
			if r.Gateways[j].Name == name {
				return r, &r.Gateways[j], true
			}
		}
	}
	return nil, nil, false
}

// DialSide is the region whose gateways open link i's sessions (one
// session carries the legs of both directions): links[i].dial when set,
// else the default rule (docs/links-and-routes.md): the end that is not
// the hub, the hub being the end with more links in the file; on a tie,
// when the routes between the two regions flow one way only, the sending
// end; otherwise the first region of between. "" for an amqp link (both
// sides connect to the broker) and for a link that is not well formed.
// topology.New and validation both use it.
func (f *File) DialSide(i int) string {
	if i < 0 || i >= len(f.Links) {
		return ""
	}
	l := f.Links[i]
	if l.Transport == "amqp" || len(l.Between) != 2 {
		return ""
	}
	region := func(ref string) string { r, _, _ := strings.Cut(ref, "/"); return r }
	a, b := region(l.Between[0]), region(l.Between[1])
	if l.Dial != "" {
		return l.Dial
	}
	na, nb := 0, 0
	for _, o := range f.Links {
		for _, ref := range o.Between {
			switch region(ref) {
			case a:
				na++
			case b:
				nb++
			}
		}
	}
	switch {
	case na > nb:
		return b
	case nb > na:
		return a
	}
	ab, ba := false, false
	for _, rt := range f.Routes {
		for _, to := range rt.To {
			switch {
			case region(rt.From) == a && region(to) == b:
				ab = true
			case region(rt.From) == b && region(to) == a:
				ba = true
			}
		}
	}
	if ba && !ab {
		return b
	}
	return a
}
