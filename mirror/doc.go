// Package mirror is the replication engine: it reads the source partitions of
// a gateway's outbound route legs and sends them as batches over
// transport.Conn sessions, and writes inbound batches to their destination
// clusters exactly once.
//
// # Exactly once
//
// Progress lives at the destination. The receiving gateway writes each group
// of batches in one Kafka transaction together with a progress record per
// source partition (ProgressTopic): the next source offset and the exact
// source→destination offset ranges of what the transaction wrote. Only after
// the commit does it acknowledge the batches. When a session starts, and
// whenever a transaction fails, the receiver sends a Resume with the committed
// positions and a new generation; the sender restarts its source there and
// the receiver drops batches of older generations. The transactional ID is per
// leg, so a restarted receiver fences its predecessor and aborts the
// transaction it left open.
//
// # Offset maps
//
// ProgressTopic (package progress) is compacted. Each progress record carries the offset ranges
// of its partition since the last sealed segment; every 128 ranges the
// transaction also writes them as a segment record of their own, and segments
// whose destination records retention has deleted are tombstoned. Ranges are
// packed as varint deltas (about 5 bytes each on the wire and in memory), so
// the map of a partition that commits ten transactions a second costs about
// 4 MB a day, kept only as long as the destination keeps the records.
//
// # Passthrough
//
// On a link with passthrough (topology: links[].passthrough), the sender
// reads the source with a raw fetcher (internal/kraw) and forwards runs of
// the source's Kafka record batches as they are (Batch.Kafka, protocol
// version 3); the receiver writes them with a raw transactional producer in
// the same transactions as their progress, after rewriting only the
// producer fields of each batch header. Each batch's records are at
// consecutive offsets at both ends, so the offset map is a range per
// batch. A batch that cannot go as it is (older message format,
// LogAppendTime, gaps left by compaction, starting before the resume
// position) is decoded and sent as records, and the receiver of a
// passthrough leg builds Kafka batches from those itself: all of a leg's
// data goes through one producer, which numbers the sequences. A batch the
// destination refuses is decoded and written record by record on the next
// attempt, so that the record it cannot take is dead-lettered. Kafka takes
// one batch per partition in a produce request, so a transaction costs a
// round trip per source batch of its busiest partition; when the
// destination's recent round trips were all slow and the CPUs are to
// spare, the receiver merges runs of small batches (decoded, re-batched).
//
// # Loops
//
// Routes may form cycles over clusters (active-active, docs/active-active.md).
// The sender keeps records from going back into a cluster they have been
// written to (loops.go): records carry the header meridian.origin (package
// routing/origin), extended by each sender, and a record whose path holds
// the leg's destination is dropped; Kafka batches forwarded as they are
// carry no header, so the sender skips the transactional batches that the
// sinks of the leg's LoopWriters wrote into its source, knowing their
// producer IDs by DescribeTransactions of their transactional IDs (a
// lookup per producer ID not seen before), and past ones from the
// progress records their transactions wrote at the source. Both are
// dropped as filtered records are: gaps that progress moves past.
//
// # Permanent errors, continuity and gaps
//
// A destination refusal that no retry changes never becomes a hot loop nor
// a silent skip (sinkerr.go, quarantine.go, continuity.go):
//
//   - A record the destination refuses for good (too large, invalid
//     timestamp, invalid record, corrupt: refusals in sinkerr.go) is
//     dead-lettered to DeadLetterTopic with its kind and reason; a refused
//     batch of several records is first narrowed to one record per produce
//     batch, so that only the record at fault goes there.
//   - A partition the destination refuses whole (topic authorization,
//     invalid topic name: the same table) is quarantined: its batches
//     are acknowledged unwritten, the rest of the leg flows, and it is
//     probed again after 1 s doubling to 5 min (jittered) until a commit
//     writes it.
//   - Any other failed transaction is retried after 200 ms doubling to
//     30 s (jittered), reset by a commit.
//   - Each batch continues its partition's committed progress: data starts
//     at the committed next offset; a sender covers offsets the source
//     explains without data (compaction, aborted records, markers,
//     retention, records the route's filter or loop prevention dropped) with an empty batch
//     first. The receiver drops anything
//     else unwritten and resumes the sender.
//   - A sender whose position retention deleted (an out-of-range resume,
//     or a backlog older than the source's retention) restarts at the log
//     start whatever start_at says, and counts, logs and shows the offsets
//     lost (LegStatus.SourceGaps).
//
// # Scheduling a link
//
// Each session's credit is also its scheduler: the receiver's window of
// unacknowledged bytes, the link's rate cap (a token bucket charged with
// each batch's wire bytes) and route priority (a batch waits while one of a
// higher-priority route waits; lower priorities may fill only half the
// window). A backlog therefore waits in the source cluster, not in the
// gateway's memory or in the link's queue, and an alarm route overtakes a
// telemetry backlog.
//
// The receiver does not trust the sender to keep to its window: each
// session has a recvWindow that charges every batch queued (including
// those held while their topic is prepared) and releases it before its Ack
// or Resume goes; past the window plus one batch the session ends with
// Error protocol. Both sides charge a batch its raw size or what it takes
// decoded (minBatchCost plus recordCost per record and header), whichever
// is more. A peer that broke the protocol (credit, malformed frames) is
// refused by Accept for 1 s, doubling to 64 s, forgotten after 10 quiet
// minutes (penalties).
//
// # Sources that are not Kafka
//
// A leg whose source cluster is not Kafka (kind amqp) is read through
// Source (endpoint.go), opened by Options.OpenSource at each Resume with
// the committed positions. Each of its topics has one partition whose
// positions the source assigns (a sequence continuing from the committed
// next); the pump announces the topics, then sends what Next yields through
// the same batching, filters, origin header, continuity checks and credit as
// a Kafka source, and hands every Ack's batch ends to Source.Committed, so
// that the source settles only what the destination committed. Everything
// at the receiver (progress, offset maps, fences) is unchanged.
//
// # Destinations that are not Kafka
//
// A leg whose destination cluster is not Kafka (kind amqp) keeps the
// receiver's coordinator, shards, generations, continuity checks, Resume
// and Acks; only the sink differs (endpoint_sink.go): each shard opens a
// Writer (Options.OpenWriter) instead of a transactional producer, loads
// the progress the writer kept instead of the progress topic, and a Topic
// announcement is checked against the cluster's addresses instead of
// creating a topic. A write counts as committed once the writer returned,
// which it does only after the destination accepted every record and the
// progress is kept; since such a destination has no transaction for both,
// it is at least once (package amqpsink says where the window is).
//
// # Goroutines
//
// Engine.Run owns everything: one coordinator per inbound leg (inLeg.run,
// which owns the leg's shard loops and its group sync), one accept loop and
// one goroutine per accepted session (serveSession, which owns a topic
// preparer per leg with announcements in hand, so that preparing one leg's
// destination topic never stalls the other legs' batches), one dialler per
// peer gateway, and per session one runner per leg (which owns its source
// pump and topic discoverer). Each waits for what it starts.
//
// A reload changes a running engine (ApplyIn, ApplyOut): the coordinators
// and senders are started through startReceiverLocked and
// startSenderLocked, each with its own context and a stop that waits for
// it, and counted in Engine.receivers and Engine.senders, which Run waits
// for; once Run has begun draining (receiving or sending false) nothing
// new starts. A changed leg's or peer's old goroutine has ended before its
// new one starts.
//
// A duplex session (duplex.go, protocol version 4: the dialler receives
// legs too) adds one demultiplexer goroutine per session, which owns the
// connection's Recv loop and is waited for by whoever split the
// connection: on the dialler, outPeer.serve, which also runs and waits for
// the receiving half's serveSession; on the listener, serveConn, which
// hands the sending half to the peer's outPeer (whose run, waiting for
// sessions instead of dialling, serves it) and waits for the goroutine
// that hands it over once the handshake is confirmed. outPeer.mu (the
// half being served) is a leaf.
//
// Relays (relay.go, relay_path.go, docs/relays.md): an outPeer with a relay
// path owns its pathSwitch, whose probe goroutine (a session without legs
// over the direct link, while the legs relay) is started by the switch to
// the relay and stopped, and waited for, by the switch back or when the
// outPeer's run returns. On a relay gateway, serveConn runs relaySession
// for a relayed session: it dials the destination and owns the two pipe
// goroutines (one per direction), waiting for both after ending both
// sessions. pathSwitch.mu is a leaf.
//
// # Lock order
//
// Engine.inMu, then legState.mu, then legStats.mu. Engine.outMu is a
// leaf (ApplyOut and ApplyIn stop goroutines with neither held). groupSync.mu, credit.mu, the sender's
// legRunner.mu, roundTimes.mu and writerIDs.mu are leaves: nothing is
// locked while one of them is held (writerIDs asks the source cluster
// without it). OffsetMap has its own RWMutex, also a leaf.
//
// # Receiver states
//
// legState owns a leg's receiving state; its methods are the only code that
// changes it (Locked methods expect legState.mu held). A leg:
//
//	           attach (gen++)              resumeDue: owner set, every
//	unowned -----------------> resume due ----------------------------> flowing
//	   ^                        ^      shard ready, none writing          |
//	   |                        |                                         |
//	   |                        +-- attach of a newer session (gen++) ----+
//	   |                        +-- detach of the owner, a candidate -----+
//	   |                        |   takes over (gen++)                    |
//	   |                        +-- finish with an error (gen++) ---------+
//	   |                        +-- holdLocked gives up on a topic -------+
//	   |                            (gen++)                               |
//	   +------------- detach of the owner, no candidate ------------------+
//	                  (from resume due too; queues dropped)
//
// While a Resume is due, enqueue drops batches (stale) and take gives the
// shards nothing. A shard:
//
//	         toOpen (none writing), sink.open,
//	         opened (progress loaded)         take (writing++)
//	closed ---------------------------> ready ----------------> busy
//	  ^  ^                                ^ |  finish, no error   |
//	  |  |                                | +<--------------------+
//	  |  +---- fenced (not busy) ---------+                       |
//	  +------- finish with an error (sink closed, leg gen++) -----+
//	  +------- finish after fenced (sink closed) -----------------+
//
// A fenced leg (openShards finds a fence) keeps every shard closed and looks
// again every Tuning.FenceRecheck, or when a session attaches.
//
// # Files
//
//	engine.go            Options, Tuning, Engine: New, Accept, Run, Status
//	sender.go            a peer: dialing (hedged), or waiting for the peer's sessions; the session, its receive loop
//	duplex.go            one connection split by frame direction into a sending and a receiving half
//	sender_pump.go       a leg's runner: source pipelines, batching, sending
//	passthrough.go       the raw (Kafka batches as they are) variant of the pump
//	endpoint.go          Source, the seam for sources that are not Kafka (AMQP addresses), and its pump
//	endpoint_sink.go     Writer, the seam for destinations that are not Kafka, in place of the sink's transactions
//	sender_discover.go   topic discovery and announcement
//	sender_groups.go     sending the source groups' committed offsets
//	filter.go            route filters at the sender: dropped records leave gaps, counted
//	loops.go             loop prevention at the sender: origin header, sinks' producer IDs
//	credit.go            a session's credit: window, rate cap, priorities
//	window.go            the receiver's enforcement of the window it granted
//	penalty.go           refusing peers that broke the protocol, for a while
//	receiver.go          an inbound leg and its coordinator (open, resume, fences)
//	legstate.go          the leg's and its shards' state, the only code changing it
//	receiver_auth.go     authorizing a Hello: known gateway, its region, its legs
//	receiver_session.go  serving a session (only its Hello's legs); topic preparers
//	receiver_policy.go   what a Topic frame may ask: route filters, names, configs
//	receiver_topics.go   creating and configuring destination topics
//	receiver_shard.go    a shard's loop: transactions, stats, acks
//	sink.go, sink_raw.go writing a transaction (records; Kafka batches)
//	sinkerr.go           per-record refusals: classification, dead letters
//	quarantine.go        partitions the destination refuses whole
//	continuity.go        batches continue the progress; source gaps
//	groups.go            committing translated group offsets at the destination
//	progress.go          ProgressTopic and the names mirror takes from package progress
//	stats.go, metrics.go status and Prometheus metrics
//
// Beside the engine: package cloudevents (AMQP messages to Kafka records
// and back), package amqpsource (an AMQP broker's addresses as a Source),
// package amqpsink (and as a Writer), package progress (the progress store: progress
// records, offset maps and translation, fences, transactional IDs) and
// package dr (failover, failback, fencing, group translation, their
// reports).
//
// The engine talks to links only through transport.Conn and to Kafka only
// through franz-go (sources and sinks), never to quic-go directly.
package mirror
