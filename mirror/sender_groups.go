package mirror

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/meridian-gw/meridian/transport"
)

// groupPollInterval is how often a sender reads the source groups' committed
// offsets; a change reaches the destination within about this much plus a
// round trip.
const groupPollInterval = 500 * time.Millisecond

// watchGroups sends the committed offsets of the leg's source consumer groups
// to the receiver whenever they change (all of them once per session).
func (lr *legRunner) watchGroups(ctx context.Context, adm *kadm.Client) {
	leg := lr.out.leg
	sent := map[transport.GroupOffset]bool{} // offsets the receiver has been told
	t := time.NewTicker(groupPollInterval)
	defer t.Stop()
	for {
		if err := lr.sendGroupOffsets(ctx, adm, sent); err != nil && ctx.Err() == nil {
			lr.p.log.Warn("read source consumer groups", "leg", leg.ID, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (lr *legRunner) sendGroupOffsets(ctx context.Context, adm *kadm.Client, sent map[transport.GroupOffset]bool) error {
	leg := lr.out.leg
	listed, err := adm.ListGroups(ctx)
	if err != nil {
		return err
	}
	var groups []string
	for _, g := range listed.Groups() {
		if leg.MatchGroup(g) {
			groups = append(groups, g)
		}
	}
	if len(groups) == 0 {
		return nil
	}
	f := &transport.Groups{Leg: leg.ID}
	now := map[transport.GroupOffset]bool{}
	var ferr error
	for _, r := range adm.FetchManyOffsets(ctx, groups...) {
		if r.Err != nil {
			ferr = errors.Join(ferr, fmt.Errorf("group %s: %w", r.Group, r.Err))
			continue
		}
		r.Fetched.Each(func(o kadm.OffsetResponse) {
			if o.Err != nil || o.At < 0 || !leg.Match(o.Topic) {
				return
			}
			g := transport.GroupOffset{Group: r.Group, Topic: o.Topic, Partition: o.Partition, Offset: o.At}
			now[g] = true
			if !sent[g] {
				f.Offsets = append(f.Offsets, g)
			}
		})
	}
	if len(f.Offsets) > 0 {
		if err := lr.conn.Send(ctx, f); err != nil {
			return fmt.Errorf("send group offsets: %w", err)
		}
	}
	clear(sent)
	maps.Copy(sent, now)
	return ferr
}
