// Package profile holds Meridian's named link profiles: how a link between
// two gateways behaves (delay, jitter, loss, bursts, rate, queue, MTU,
// reordering, duplication and scheduled events such as blackouts, satellite
// handovers and rain fade), kept as data in embedded YAML files (lan.yaml,
// wan.yaml, geo-satellite.yaml, ...).
//
// The package is pure data and a leaf of the model: it parses, validates and
// copies profiles, does no I/O, starts no goroutines and imports neither
// config, topology nor chaos. So config checks profile names against it, and
// the gateway, mirror and transport tuning read the same profiles that the
// chaos network lab emulates, without importing chaos.
//
// # Schema
//
//	description: free text
//	link:                 # both directions
//	  delay: 40ms         # one-way propagation delay
//	  jitter: 2ms         # delay varies uniformly in [delay-jitter, delay+jitter]
//	  loss: 1%            # independent random loss (0.01 works too)
//	  burst_loss:         # Gilbert-Elliott bursty loss, per packet
//	    p: 0.2%           #   good -> bad transition probability
//	    r: 30%            #   bad -> good transition probability
//	    bad_loss: 100%    #   loss in the bad state (default 100%)
//	    good_loss: 0%     #   loss in the good state (default 0)
//	  rate: 10Mbit        # bottleneck rate (kbit, Mbit, Gbit, Tbit; "/s" optional); 0 or unlimited = none
//	  queue: 200ms        # bottleneck FIFO: a time at the rate (200ms) or a size (256KiB, 64000)
//	  mtu: 1500           # largest IP packet; larger ones are dropped (default 1500)
//	  reorder: 0.1%       # probability that a packet is held back and overtaken
//	  reorder_gap: 10ms   # how long a reordered packet is held back (default 10ms)
//	  duplicate: 0.01%    # probability that a packet is delivered twice
//	up:                   # dialing side -> listening side; overrides link
//	  rate: 2Mbit
//	down:                 # listening side -> dialing side; overrides link
//	  rate: 20Mbit
//	events:
//	  - kind: blackout    # blackout | handover | rain_fade
//	    direction: both   # both (default) | up | down
//	    at: 40s           # first start after the link comes up (default: every)
//	    every: 40s        # period; omitted = once
//	    duration: 2s      # length of each occurrence
//	  - kind: handover    # extra_delay and loss apply for the duration
//	    every: 15s
//	    duration: 300ms
//	    extra_delay: 20ms
//	    loss: 10%
//	  - kind: rain_fade   # loss ramps 0 -> loss -> 0; rate scaled by rate_factor at the peak
//	    at: 4m
//	    every: 10m
//	    duration: 60s
//	    ramp: 20s         # ramp up and ramp down, each; 2*ramp <= duration
//	    loss: 20%
//	    rate_factor: 0.25
//
// Rates, sizes and durations follow the grammar of package internal/units,
// the same as in topology files: a rate needs a unit ("Mbps" is refused as
// ambiguous), sizes take decimal or binary units, durations are Go's.
//
// "up" is the direction from the side that dials (the remote site, the
// client of the UDP proxy) to the side that listens; "down" is the reverse.
// Sizes and rates count whole IP packets, so a carrier that sees UDP
// payloads adds the IP and UDP header overhead.
//
// Decoding is strict: unknown or duplicate keys, values out of range and
// overlapping events are errors, all reported at once as
// "profile NAME: LINE:COL: PATH: reason".
package profile
