// Package chaos owns fault injection and the network lab: link emulation
// (delay, jitter, loss, bursts, reordering, duplication, rate limits with
// bounded queues, MTU, blackouts and scheduled events), and later process
// and broker faults and the embedded multi-region lab behind `meridian demo`.
// Tests, benchmarks and the demo use it. The production path of
// `meridian run` must never import it.
//
// # Link profiles
//
// Named link profiles (lan, wan, geo-satellite, leo-satellite, mobile-lte,
// mobile-3g-flaky) are production data, embedded in package topology/profile beside the
// model (the gateway and transport tuning read them too); LoadProfile, ProfileNames and ParseProfile
// are shortcuts to it. A profile gives, per direction (Up: from the dialing
// side to the listening side; Down: back), one-way delay, jitter, random
// loss, optional Gilbert-Elliott bursty loss (p, r, bad_loss, good_loss),
// a rate in bit/s with a bounded FIFO queue (bytes or time at the rate),
// MTU, reorder and duplicate probabilities; and a list of scheduled events
// (blackout, handover, rain_fade) timed from link start with at, every and
// duration. A "link" section applies to both directions and "up"/"down"
// override it. See package topology/profile for the full schema. Derive
// variants with Profile.WithLoss, WithRate, WithRTT and WithoutEvents.
//
// # Impairment
//
// Impairment is the link model for one direction, separate from any
// carrier: given a packet size and its arrival time it returns a Decision
// (dropped and why, or one or two delivery times). It draws from a PCG
// source seeded by the caller, so a run replays from its seed, and it reads
// no clock, so unit tests drive it with synthetic times. The UDP proxy
// and the packet-level lab (package chaos/netlab: network namespaces
// joined by TUN devices) both use it, each through a Pipe: one direction
// of a link that runs packets through an Impairment and delivers them from
// a timer-driven scheduler at the times it decides. On Linux the scheduler
// sleeps on a timerfd, so deliveries are tens of microseconds late instead
// of up to the millisecond by which runtime timers overshoot.
//
// # UDP proxy
//
// UDPProxy sits between a UDP client (a QUIC gateway) and its server on
// loopback. Each client address gets its own upstream socket, so the server
// sees one peer per client; both directions cross a shared Impairment and a
// timer-driven delivery scheduler. Blackouts can be scheduled by the
// profile, switched with SetBlackout or run for a while with Blackout; the
// profile can be swapped live with SetProfile; Stats counts delivered
// packets and drops by reason per direction.
//
// # Concurrency
//
// A UDPProxy runs one reader for the listening socket, one per client
// upstream socket, one delivery loop (Pipe.Run) per direction and one
// expiry loop; Close waits for all of them. Lock order: UDPProxy.mu, then
// Impairment.mu; Pipe.mu is never held with another lock.
package chaos
