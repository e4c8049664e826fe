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
// ProgressTopic is compacted. Each progress record carries the offset ranges
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
// # Goroutines
//
// Engine.Run owns everything: one sink loop per inbound leg, one accept loop
// and one goroutine per accepted session, one dialler per peer gateway, and
// per session one runner per leg (which owns its source pump and topic
// discoverer). Each waits for what it starts.
//
// The engine talks to links only through transport.Conn and to Kafka only
// through franz-go (sources and sinks), never to quic-go directly.
package mirror
