package mirror

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/transport"
)

// Shared legs, the sending end. A leg that several gateways of its
// source region send (routing.Leg.Shared) is shared among those that have
// a session up: for each session, the leg's runner joins the consumer
// group routing.Leg.ShareGroup on the source cluster with the leg's
// topics, and Kafka's group coordinator assigns each member its share of
// the partitions (cooperative sticky: a rebalance moves only what it must).
// The group only assigns: its members never fetch through it (every
// assigned topic is paused) and never commit offsets, since positions come
// from the destination's Resume as for any leg.
//
// Each assignment, revocation or loss is sent as a Claim with the group
// generation; the receiver answers with a Resume, and the runner's pump
// restarts from it reading only the partitions assigned (share.go has the
// receiver's rules). The membership lasts as long as the session: a
// gateway whose link is down leaves the group, and its partitions move to
// the gateways whose links are up. A gateway paused past the group's
// session timeout (SIGSTOP) loses its partitions to the others; when it
// wakes up, its claims carry an older generation and are refused, and
// the batches it still sends of them are dropped unwritten.

// shareGroup is one session's membership of a shared leg's group.
type shareGroup struct {
	lr      *legRunner
	changed chan struct{} // cap 1: the assignment changed

	mu       sync.Mutex
	assigned map[tp]bool
	cl       *kgo.Client // set once joined
}

func newShareGroup(lr *legRunner) *shareGroup {
	return &shareGroup{lr: lr, changed: make(chan struct{}, 1), assigned: map[tp]bool{}}
}

// owns returns a copy of the partitions assigned now.
func (g *shareGroup) owns() map[tp]bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return maps.Clone(g.assigned)
}

func (g *shareGroup) update(add bool, parts map[string][]int32) {
	g.mu.Lock()
	for t, ps := range parts {
		for _, p := range ps {
			if add {
				g.assigned[tp{Topic: t, Partition: p}] = true
			} else {
				delete(g.assigned, tp{Topic: t, Partition: p})
			}
		}
	}
	g.mu.Unlock()
	wake(g.changed)
}

// run joins the group and sends a Claim for every change of the
// assignment until ctx ends; then it leaves the group. Errors of the
// source end the session (as a pump's do).
func (g *shareGroup) run(ctx context.Context) error {
	lr := g.lr
	leg := lr.out.leg
	opts, err := lr.p.e.opts.ClusterOpts(leg.From)
	if err != nil {
		return err
	}
	session := leg.Route.ShareTimeout
	if t := lr.p.e.opts.Tuning.ShareSession; t > 0 {
		session = t
	}
	if session <= 0 {
		session = 10 * time.Second
	}
	groupOpts := []kgo.Opt{
		kgo.ConsumerGroup(leg.ShareGroup()),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.DisableAutoCommit(),
		kgo.SessionTimeout(session),
		kgo.HeartbeatInterval(max(session/10, 100*time.Millisecond)),
		kgo.RebalanceTimeout(session),
		kgo.MetadataMinAge(250 * time.Millisecond),
		kgo.MetadataMaxAge(max(leg.Discover(), time.Second)), // new partitions reach the assignment quickly
		kgo.OnPartitionsAssigned(func(_ context.Context, cl *kgo.Client, parts map[string][]int32) {
			// Never fetched through the group: positions come from the
			// destination.
			cl.PauseFetchTopics(slices.Collect(maps.Keys(parts))...)
			g.update(true, parts)
		}),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, parts map[string][]int32) { g.update(false, parts) }),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, parts map[string][]int32) { g.update(false, parts) }),
	}
	// Topics are listed with a client of its own: a group client
	// consumes only once it has topics.
	acl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("source %s: %w", leg.From.Ref(), err)
	}
	defer acl.Close()
	adm := kadm.NewClient(acl)
	var cl *kgo.Client
	var polled sync.WaitGroup
	defer polled.Wait() // after Close: poll returns when the client closes
	defer func() {
		if cl != nil {
			// Close leaves the group: the other gateways take the
			// partitions at once, not a session timeout later.
			cl.Close()
		}
		lr.p.e.m.sharePartsOut.WithLabelValues(leg.ID).Set(0)
	}()
	subscribed := map[string]bool{}
	tick := time.NewTicker(leg.Discover())
	defer tick.Stop()
	// The first Claim, empty until the group assigns: the receiver then
	// knows the session's share, none yet.
	wake(g.changed)
	var last map[tp]bool
	for {
		// The group's topics: the leg's, as discovery finds them.
		if td, err := adm.ListTopics(ctx); err == nil {
			var add []string
			for _, name := range td.Names() {
				if td[name].Err == nil && leg.Match(name) && !subscribed[name] {
					subscribed[name] = true
					add = append(add, name)
				}
			}
			switch {
			case len(add) == 0:
			case cl == nil:
				slices.Sort(add)
				if cl, err = kgo.NewClient(append(slices.Concat(opts, groupOpts), kgo.ConsumeTopics(add...))...); err != nil {
					return fmt.Errorf("source %s: share group %s: %w", leg.From.Ref(), leg.ShareGroup(), err)
				}
				g.mu.Lock()
				g.cl = cl
				g.mu.Unlock()
				polled.Go(func() { g.poll(ctx, cl) })
			default:
				cl.AddConsumeTopics(add...)
			}
		} else if ctx.Err() == nil {
			lr.p.log.Warn("share group: list source topics", "leg", leg.ID, "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-g.changed:
			now := g.owns()
			if last != nil && maps.Equal(now, last) {
				continue
			}
			if err := g.claim(ctx, cl, now); err != nil {
				return err
			}
			last = now
		}
	}
}

// poll surfaces the group's errors (a refused join, a coordinator that
// cannot be reached): a member that never fetches sees them only as the
// fake fetches the client injects. Every topic is paused, so no records
// come.
func (g *shareGroup) poll(ctx context.Context, cl *kgo.Client) {
	leg := g.lr.out.leg
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil || fs.IsClientClosed() {
			return
		}
		fs.EachError(func(_ string, _ int32, err error) {
			g.lr.p.log.Warn("share group", "leg", leg.ID, "group", leg.ShareGroup(), "err", err)
			g.lr.out.stats.setErr(fmt.Errorf("share group %s: %w", leg.ShareGroup(), err))
		})
	}
}

// claim sends the Claim for parts.
func (g *shareGroup) claim(ctx context.Context, cl *kgo.Client, parts map[tp]bool) error {
	lr := g.lr
	leg := lr.out.leg
	member, gen := "", int32(-1)
	if cl != nil {
		member, gen = cl.GroupMetadata()
	}
	c := &transport.Claim{Leg: leg.ID, Generation: gen, Member: member}
	byTopic := map[string][]int32{}
	for k := range parts {
		byTopic[k.Topic] = append(byTopic[k.Topic], k.Partition)
	}
	for _, t := range slices.Sorted(maps.Keys(byTopic)) {
		ps := byTopic[t]
		slices.Sort(ps)
		c.Topics = append(c.Topics, transport.ClaimedTopic{Topic: t, Partitions: ps})
	}
	m := lr.p.e.m
	m.sharePartsOut.WithLabelValues(leg.ID).Set(float64(len(parts)))
	m.shareRebal.WithLabelValues(leg.ID).Inc()
	lr.p.log.Info("share group assignment", "leg", leg.ID, "group", leg.ShareGroup(), "generation", gen, "member", member,
		"partitions", len(parts))
	if err := lr.conn.Send(ctx, c); err != nil {
		return fmt.Errorf("send claim: %w", err)
	}
	return nil
}
