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
