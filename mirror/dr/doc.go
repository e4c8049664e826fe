// Package dr holds a leg's disaster-recovery operations, run by
// `meridian failover`, `meridian failback`, `meridian offsets` and the
// gateway's admin endpoint while the replication engine (package mirror)
// goes on or is down: Failover (drain, final consumer-group sync, fence,
// data at risk), Failback (stragglers, copy back, moved progress, groups
// back, lifted fence), fencing (FenceLeg, LiftFence, LegFence) and group
// offset translation (TranslateGroup), with the reports they return.
//
// Each operation opens the destination's progress store (package progress)
// once and uses one read of it for all of its steps. It never talks to a
// running engine: the fence it writes, and the transactional IDs it bumps,
// are what stop a receiver, and the progress it moves is what a receiver
// resumes from.
package dr
