package mirror

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/meridian-gw/meridian/mirror/progress"
	"github.com/meridian-gw/meridian/transport"
)

// groupSync commits, at a leg's destination, the translated offsets of the
// source consumer groups the route names, for groups that have no members at
// the destination (an active group owns its offsets). Offsets arrive in
// Groups frames; the latest per group and partition wins.
type groupSync struct {
	l *inLeg

	mu      sync.Mutex
	pending map[groupPart]int64 // source offsets not yet handled
	done    map[groupPart]int64 // destination offsets committed
	active  []string            // groups skipped because active at the destination
	synced  map[string]bool
	lastErr string
	notify  chan struct{}

	// The leg's committed state at the destination, read lazily and
	// refreshed before each round of commits: a fenced leg commits no
	// offsets (see fencedAtDest). Touched only by run's goroutine.
	store *progress.Store
	state *progress.State
}

type groupPart struct {
	group, topic string
	partition    int32
}

func newGroupSync(l *inLeg) *groupSync {
	return &groupSync{l: l, pending: map[groupPart]int64{}, done: map[groupPart]int64{},
		synced: map[string]bool{}, notify: make(chan struct{}, 1)}
}

// offer queues the offsets of a Groups frame: only those of groups the
// route's groups filter names, on topics the route mirrors, and no more
// than Tuning.MaxPendingGroupOffsets pending at once. What it drops is
// counted in meridian_group_offsets_dropped_total and logged.
func (g *groupSync) offer(f *transport.Groups) {
	leg, max := g.l.leg, g.l.e.opts.Tuning.MaxPendingGroupOffsets
	var filtered, full int
	g.mu.Lock()
	for _, o := range f.Offsets {
		if !leg.MatchGroup(o.Group) || !leg.Match(o.Topic) {
			filtered++
			continue
		}
		k := groupPart{o.Group, o.Topic, o.Partition}
		if _, ok := g.pending[k]; !ok && len(g.pending) >= max {
			full++
			continue
		}
		g.pending[k] = o.Offset
	}
	g.mu.Unlock()
	if filtered > 0 {
		g.l.e.m.groupDropped.WithLabelValues(leg.ID, "filter").Add(float64(filtered))
		g.l.log.Warn("dropped consumer group offsets outside the route's filters", "leg", leg.ID, "offsets", filtered)
	}
	if full > 0 {
		g.l.e.m.groupDropped.WithLabelValues(leg.ID, "full").Add(float64(full))
		g.l.log.Warn("dropped consumer group offsets: too many pending", "leg", leg.ID, "offsets", full, "max", max)
	}
	wake(g.notify)
}

// run handles offered offsets until ctx ends. Offsets that cannot be
// translated yet (the group has read past the mirror) stay pending and are
// retried as the mirror advances.
func (g *groupSync) run(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	defer func() {
		if g.store != nil {
			g.store.Close()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-g.notify:
		case <-t.C:
		}
		if err := g.sync(ctx); err != nil && ctx.Err() == nil {
			g.mu.Lock()
			g.lastErr = err.Error()
			g.mu.Unlock()
			g.l.log.Warn("sync consumer group offsets", "leg", g.l.leg.ID, "err", err)
		}
	}
}

func (g *groupSync) sync(ctx context.Context) error {
	omap := g.l.offsetMap()
	g.mu.Lock()
	if len(g.pending) == 0 || omap == nil {
		g.mu.Unlock()
		return nil
	}
	work := make(map[groupPart]int64, len(g.pending))
	for k, v := range g.pending {
		work[k] = v
	}
	g.mu.Unlock()

	// Translate; keep what cannot be translated exactly yet.
	commits := map[string]kadm.Offsets{}
	handled := map[groupPart]int64{}
	for k, src := range work {
		tr := omap.Translate(k.topic, k.partition, src)
		if tr.Status != progress.Exact && tr.Status != progress.CaughtUp {
			continue
		}
		handled[k] = src
		if g.done[k] == tr.Dest {
			continue
		}
		os := commits[k.group]
		if os == nil {
			os = kadm.Offsets{}
			commits[k.group] = os
		}
		os.Add(kadm.Offset{Topic: tr.DestTopic, Partition: k.partition, At: tr.Dest, LeaderEpoch: -1,
			Metadata: fmt.Sprintf("meridian: %s %s/%d@%d", g.l.leg.ID, k.topic, k.partition, src)})
		g.mu.Lock()
		g.done[k] = tr.Dest
		g.mu.Unlock()
	}
	var active []string
	if len(commits) > 0 {
		if fenced, err := g.fencedAtDest(ctx); err != nil || fenced {
			// Offsets recorded as committed above were not: forget them,
			// so that they are committed once the fence is lifted.
			for grp := range commits {
				g.forget(grp)
			}
			if err != nil {
				return fmt.Errorf("read the leg's fence at %s: %w", g.l.leg.To.Ref(), err)
			}
			return nil
		}
		adm, err := g.l.admin()
		if err != nil {
			return err
		}
		groups := make([]string, 0, len(commits))
		for grp := range commits {
			groups = append(groups, grp)
		}
		sort.Strings(groups)
		described, err := adm.DescribeGroups(ctx, groups...)
		if err != nil {
			return fmt.Errorf("describe groups at %s: %w", g.l.leg.To.Ref(), err)
		}
		for i, grp := range groups {
			if d, ok := described[grp]; ok && d.Err == nil && len(d.Members) > 0 {
				// Consumers at the destination own this group now; its
				// offsets stay pending until it has no members.
				active = append(active, grp)
				g.forget(grp)
				for k := range handled {
					if k.group == grp {
						delete(handled, k)
					}
				}
				continue
			}
			if err := adm.CommitAllOffsets(ctx, grp, commits[grp]); err != nil {
				// This group and the ones after it were recorded as
				// committed above but were not: commit them next round.
				for _, rest := range groups[i:] {
					g.forget(rest)
				}
				return fmt.Errorf("commit offsets of group %s at %s: %w", grp, g.l.leg.To.Ref(), err)
			}
			g.l.e.m.groupCommits.WithLabelValues(g.l.leg.ID).Inc()
			g.mu.Lock()
			g.synced[grp] = true
			g.mu.Unlock()
		}
	}
	g.mu.Lock()
	for k, src := range handled {
		if g.pending[k] == src {
			delete(g.pending, k)
		}
	}
	if len(commits) > 0 {
		g.active = active
	}
	g.lastErr = ""
	g.mu.Unlock()
	return nil
}

// fencedAtDest reports whether the leg is fenced at its destination. A
// failover fences the leg, then commits the groups' final translation
// itself; a commit from here after that, from offsets the source sent
// earlier, would move a group back and make its consumers at the new
// primary read again what they had read at the old one. The fence is read
// from the progress topic rather than taken from the leg's coordinator,
// which learns of it only when it next loads the progress.
func (g *groupSync) fencedAtDest(ctx context.Context) (bool, error) {
	if _, f := g.l.state.ownerAndFence(); f != nil {
		return true, nil
	}
	if g.store == nil {
		opts, err := g.l.e.opts.ClusterOpts(g.l.leg.To)
		if err != nil {
			return false, err
		}
		store, err := progress.Open(ctx, opts)
		if err != nil {
			return false, err
		}
		st, err := store.Load(ctx, g.l.leg.ID)
		if err != nil {
			store.Close()
			return false, err
		}
		g.store, g.state = store, st
	} else if err := g.store.Refresh(ctx, g.state); err != nil {
		return false, err
	}
	return g.state.Fence(g.l.leg.ID) != nil, nil
}

// forget drops what was recorded as committed for a group, so that its
// offsets are committed again when next offered.
func (g *groupSync) forget(group string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for k := range g.done {
		if k.group == group {
			delete(g.done, k)
		}
	}
}

// status is the groups synced and those skipped as active.
func (g *groupSync) status() (synced, active []string, lastErr string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for grp := range g.synced {
		synced = append(synced, grp)
	}
	sort.Strings(synced)
	return synced, slices.Clone(g.active), g.lastErr
}
