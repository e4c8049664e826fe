// Package progress is the progress store of a destination cluster: the
// compacted topic __meridian_progress (Topic), where receivers commit, in
// the same transaction as the records they mirror, a progress record per
// source partition with the exact offset ranges it wrote; the offset maps
// rebuilt from those records and their translation (OffsetMap); the fence
// record of a failed-over leg (Fence); and the transactional IDs that
// fence stale writers (TransactionalID).
//
// A Store is opened once per destination cluster and shared by whoever
// reads or writes the topic there: a receiving leg and its sinks, or one
// failover or failback with all of its steps. Store.Load reads the topic
// once into a State; Store.Refresh goes on from where the State stopped, so
// a failover's drain follows the mirror without reading the whole topic
// again, and its fence check, epoch, group translation and report all use
// the same read.
//
// It is a package of its own, not a type inside mirror, because two
// different users need exactly this and nothing else: the replication
// engine (mirror), which writes progress, and the DR operations
// (mirror/dr), which read it, fence and move it while no engine runs in
// the process. Keeping the record format, its keys and the partitioning of
// the topic here means both sides agree on them by construction, and the
// engine's internals (sessions, sinks, credit) stay out of reach of the DR
// code.
package progress
