package profile

// DefaultCost is the relay cost of a link of the named profile when the
// link sets none (links[].cost): roughly how much worse than a LAN hop the
// profile is, so that a relay path prefers terrestrial links to
// satellites. Unknown names cost as much as wan.
func DefaultCost(name string) int {
	switch name {
	case "lan":
		return 1
	case "wan":
		return 10
	case "mobile-lte":
		return 20
	case "leo-satellite":
		return 30
	case "mobile-3g-flaky":
		return 60
	case "geo-satellite":
		return 100
	}
	return 10
}
