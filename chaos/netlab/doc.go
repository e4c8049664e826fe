// Package netlab is the packet-level network lab: one Linux network
// namespace per region, each with a TUN device, joined by emulated links
// that delay, drop, reorder, duplicate, rate-limit and black out whole IP
// packets. The kernel here has no netem, so a Go pump in this process
// plays the wire. Every protocol (QUIC, TCP for Kafka and AMQP, gossip)
// crosses the same emulated link, which is what makes a fair comparison of
// a QUIC gateway with a TCP-based Kafka mirror possible. It needs root
// (see Check); tests call netlabtest.Require. It is never imported by the
// production path of `meridian run`; `meridian chaos lab` runs it by hand.
// It builds on Linux only (elsewhere the package is empty).
//
// # Address plan
//
// Only the benchmarking range 198.18.0.0/15 is used (Prefix). Region i
// (from 0, in Options.Regions order) has the single address
// 198.18.<i+1>.1/24 on its TUN device "lab0", a route to every other
// region's /24 through the device, and loopback up. Nothing else is
// configured: no default route, no IPv6, no NAT, so a process in a region
// can reach the other regions and its own loopback and nothing else. The
// helpers enforce the same rule from the other side: DialContext dials
// only literal lab or loopback addresses (ErrOutsideLab otherwise), and
// Listen binds only unspecified, loopback or lab addresses.
//
// # Links
//
// Between each pair of regions there is one Link, named "a--b" with a
// before b in Options.Regions. Up is from a to b, Down the reverse, as in
// the profiles (Up is from the dialing side). Each direction is a
// chaos.Pipe around a chaos.Impairment built from the link's
// *chaos.Profile: the same model and the same timer-driven scheduler as the
// UDP proxy, shared in package chaos rather than copied. Sizes are whole IP
// packets, so rates and MTUs mean what they say. Scheduled events
// (blackouts, LEO handovers, rain fades) run from the lab's start; a link
// takes a new profile live with SetProfile, and SetBlackout and Blackout(d)
// cut it on demand. A profile's MTU becomes the path MTU of the route
// between the two regions (per direction), and each TUN device's MTU is the
// largest of its routes' (1500 when a profile sets none), so TCP picks its
// MSS from the profile as it would from a real path.
//
// # The pump
//
// One reader goroutine per region reads IP packets from the region's TUN
// device into one reused 64 KiB buffer, finds the destination region from
// the IPv4 destination address (198.18.<i+1>.x is region i) and hands the
// packet to the Pipe of that link direction. The Pipe asks the Impairment
// for a Decision: dropped (counted by reason), or one or two copies with
// delivery times. A copy due at once is written straight into the
// destination TUN device, with no copy and no allocation, unless an earlier
// packet is still waiting (order is kept); the rest are copied into pooled
// buffers (size classes 2, 16 and 64 KiB) and held in a heap ordered by
// delivery time. Each Pipe's delivery loop sleeps until the earliest is
// due, on a Linux timerfd watched by the runtime's poller: runtime timers
// can fire up to a millisecond late (the poller sleeps in whole
// milliseconds), a timerfd's expiry wakes it at once. Packets that fall due
// during a blackout are dropped at delivery time too. Anything that is not
// IPv4 to another region is counted as unroutable and dropped.
//
// # Namespaces
//
// Each namespace is anonymous: a goroutine locks its OS thread, unshares
// CLONE_NEWNET, opens /proc/thread-self/ns/net and creates the TUN device
// and a netlink handle while inside; the goroutine then exits still locked,
// so the runtime ends the thread instead of returning it, in a lab
// namespace, to the pool. The lab holds the namespace by that descriptor
// only, so the namespaces, their devices, addresses and routes vanish when
// the lab is closed or the process dies, however it dies. With
// Options.Named the namespaces are also bind-mounted at
// /run/netns/meridian-<region> for `ip netns exec`, as `ip netns attach`
// would; Close removes the mounts (a killed process leaves them, and
// `ip netns del` clears them; New refuses to reuse a name). The TUN devices
// are not persistent: closing the descriptor removes the device.
//
// Do runs a function on a thread switched into a region's namespace and
// switches it back (or discards the thread if it cannot): a socket keeps
// the namespace it was created in, so Listen, ListenPacket, ListenFn (for
// kfake.ListenFn) and DialContext (for kgo.Dialer or a net.Dialer) are Do
// around the net package. Command runs an external program inside a region
// with nsenter --net=/proc/self/fd/3, the namespace passed as ExtraFiles[0].
//
// # Dependencies
//
// Links, addresses and routes are configured over rtnetlink with
// github.com/vishvananda/netlink, the library Docker's libnetwork and
// the Kubernetes CNI plugins use for the job: building rtnetlink messages by
// hand is long and easy to get wrong, and its Handle keeps netlink
// sockets bound inside a namespace, so a live SetProfile can change route
// MTUs without entering the namespace again. github.com/vishvananda/netns
// supplies the thread namespace handles (Get, Set). The TUN device (one
// open and one TUNSETIFF ioctl), unshare and the timerfd use
// golang.org/x/sys/unix directly: netlink's Tuntap link type creates
// persistent devices and multi-queue descriptors we do not want.
//
// # Goroutines and locks
//
// A Lab owns, from New until Close returns: one reader per region and one
// delivery loop (Pipe.Run) per link direction, each of which owns one
// helper that wakes it on close; Close waits for all of them (Lab.wg).
// Do, and so Listen and Dial, start one goroutine per call and wait for
// it. SelfTest starts senders and receivers and waits for them. Close
// closes the pump's quit channel, then the TUN devices (which wakes the
// readers), waits, then closes the netlink handles, the named mounts and
// the namespace descriptors.
//
// Lock order: Lab.mu (closed flag, link profiles, MTUs), then
// Impairment.mu. Pipe.mu is a leaf, never held while sending or deciding.
// The counters are atomics.
//
// # Self-test and measured figures
//
// SelfTest sends UDP probes (for one-way delay and loss) and a paced bulk
// UDP transfer (for the rate) between the two regions of a link, through
// the namespaces, TUN devices and pump, and compares each figure with the
// profile: within 10% (1 ms at least for delay; for loss 10% or 4
// standard errors of the sample, whichever is larger). Measured on the
// 2-core development machine (go test -run TestSelfTest -v ./chaos/netlab/):
//
//	profile 100 ms RTT, 1% loss, 10 Mbit/s (wan.WithRTT/WithLoss/WithRate), 9.1 s:
//	  delay  up/down  50.04 ms configured, 50.86/50.85 ms median measured (jitter ±1 ms)
//	  loss   up/down  1.000% configured, 1.055%/1.030% measured, ±0.281% (20,000 probes each)
//	  rate   up/down  10.00 Mbit/s configured, 9.99/10.00 Mbit/s measured
//	perfect link: one-way delay through the pump 0.06 ms median, 0.25 ms p99
//	lan (250 µs one way): 0.52 ms median
//
// The median sits a little above the configured delay when there is
// jitter: the Impairment keeps packets in order, so under dense traffic
// delays gather near the top of the jitter band.
//
// Throughput of the pump on an unimpaired link, TCP from edge to hq with
// MTU 1500 (go test -run '^$' -bench PumpTCP ./chaos/netlab/, and
// TestPumpThroughput, which fails under 200 Mbit/s outside the race
// detector): about 0.9 to 1.2 Gbit/s (75,000-100,000 packets/s), 0
// allocations per packet; with 1 ms each way, so that every packet goes
// through the delivery heap and the timerfd, about 1.3 Gbit/s. The cost is the read and write system calls, and
// the receiving TCP stack that runs inside the write into the destination
// TUN device.
package netlab
