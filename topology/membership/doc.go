// Package membership makes a fleet of the gateways of a topology: live
// membership (who is alive, suspect, dead or has left) over
// hashicorp/memberlist, with node metadata, link health and epochs
// gossiped beside it.
//
// # Why memberlist
//
// memberlist implements SWIM with Lifeguard's refinements (suspicion with
// refutation, awareness-scaled probe intervals, indirect probes through
// other members): failure detection whose load per member stays constant
// as the fleet grows, and that tolerates a member that is slow rather than
// dead. It is proven in production (Consul, Nomad, Serf), pure Go, and
// abstracts its network behind a Transport interface, so gossip can ride
// the gateways' own mTLS QUIC sessions to sites that can only dial out.
// A home-made heartbeat protocol would have to rediscover all of that.
//
// # Seeds
//
// Every gateway of the topology is a seed (Seeds): there is no seed list
// to keep in sync with the file.
//
// # Timings
//
// memberlist takes one configuration per member, and a member probes
// members chosen at random, so a pool's timings must fit the slowest path
// between any two of its members. Inside a region that is a LAN
// (LANConfig: memberlist's LAN defaults). Across regions (FleetConfig)
// the slowest path is found from the link profiles (WorstPath: the
// slowest of the fastest chains of links between any two regions, RTT
// plus jitter, loss compounded per hop), and WANConfig raises
// memberlist's DefaultWANConfig, which is only the floor, until every
// timing is above it: two GEO hops (ship, HQ, ship: 1.2 s and 2% loss)
// get a probe timeout of 7.3 s instead of 3 s and probe every 14.6 s.
// WANConfig's comment has the rules.
package membership
