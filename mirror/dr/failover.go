package dr

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/internal/kread"
	"github.com/meridian-gw/meridian/mirror/progress"
	"github.com/meridian-gw/meridian/routing"
)

// FailoverOptions configure Failover.
type FailoverOptions struct {
	Leg      *routing.Leg
	Src, Dst []kgo.Opt // the leg's source and destination clusters
	// DryRun reports the plan and the current data at risk and changes
	// nothing.
	DryRun bool
	// Drain is how long to wait for the mirror to catch up with the source
	// before fencing; zero: 60 s. The drain also ends when the mirror makes
	// no progress for Stall (zero: 5 s), as when the link is down.
	Drain, Stall time.Duration
	// SourceTimeout bounds each attempt to reach the source cluster; zero:
	// 5 s. An unreachable source makes the failover unplanned.
	SourceTimeout time.Duration
	// Progress, if not nil, is called during the drain with the source
	// offsets still to mirror.
	Progress func(remaining int64)
	// Reason is recorded in the fence.
	Reason string
}

// FailoverReport says what a failover did and what was at risk.
type FailoverReport struct {
	Leg    string `json:"leg"`
	Route  string `json:"route"`
	From   string `json:"from"`
	To     string `json:"to"`
	DryRun bool   `json:"dry_run"`
	// SourceReachable is false for an unplanned failover: the source could
	// not be read, so the drain was skipped and the data at risk is the
	// mirror's last known lag.
	SourceReachable bool    `json:"source_reachable"`
	Drained         bool    `json:"drained"` // the mirror caught up before the fence
	DrainSeconds    float64 `json:"drain_seconds"`
	Epoch           uint64  `json:"epoch"` // the route epoch after the failover
	Fenced          bool    `json:"fenced"`
	// RPO: source records produced but not mirrored when the leg was fenced,
	// and how much newer the newest of them is than the newest mirrored
	// record.
	RPORecords int64             `json:"rpo_records"`
	RPOSeconds float64           `json:"rpo_seconds"`
	RPOExact   bool              `json:"rpo_exact"` // counted at the source, not estimated
	Partitions []PartitionAtRisk `json:"partitions"`
	Groups     []GroupFailover   `json:"groups"`
	Steps      []string          `json:"steps"`
	Seconds    float64           `json:"seconds"`
}

// PartitionAtRisk is one source partition at the moment of the fence.
type PartitionAtRisk struct {
	Topic         string  `json:"topic"`
	Partition     int32   `json:"partition"`
	Mirrored      int64   `json:"mirrored_next"` // next source offset not mirrored
	SourceEnd     int64   `json:"source_end"`    // last stable offset at the source (-1: unknown)
	RecordsAtRisk int64   `json:"records_at_risk"`
	SecondsAtRisk float64 `json:"seconds_at_risk"`
}

// GroupFailover is one consumer group's translated offsets at the new primary.
type GroupFailover struct {
	Group      string                 `json:"group"`
	Committed  bool                   `json:"committed"`        // committed at the destination
	Active     bool                   `json:"active,omitempty"` // skipped: it has members at the destination
	Partitions []progress.Translation `json:"partitions"`
}

// ErrAlreadyFailedOver is returned when the leg is fenced already.
var ErrAlreadyFailedOver = errors.New("leg is fenced already (failed over)")

// Failover moves a leg's consumers and producers to its destination: it
// drains what the mirror can still carry, fences the leg so that its old
// direction cannot write, syncs the route's consumer groups one last time
// from the final progress, and reports per group the translated offsets and
// the records at risk. An error before the fence means nothing was changed;
// one after it comes with the report so far (rep.Fenced).
func Failover(ctx context.Context, o FailoverOptions) (*FailoverReport, error) {
	start := time.Now()
	if o.Drain == 0 {
		o.Drain = 60 * time.Second
	}
	if o.Stall == 0 {
		o.Stall = 5 * time.Second
	}
	if o.SourceTimeout == 0 {
		o.SourceTimeout = 5 * time.Second
	}
	leg := o.Leg
	rep := &FailoverReport{Leg: leg.ID, Route: leg.Route.Name, From: leg.From.Ref(), To: leg.To.Ref(), DryRun: o.DryRun}
	step := func(format string, args ...any) { rep.Steps = append(rep.Steps, fmt.Sprintf(format, args...)) }

	// One read of the progress topic serves every step below; the drain
	// and the final read go on from where it stopped.
	store, err := progress.Open(ctx, o.Dst)
	if err != nil {
		return nil, fmt.Errorf("read progress at %s: %w", leg.To.Ref(), err)
	}
	defer store.Close()
	st, err := store.Load(ctx, leg.ID)
	if err != nil {
		return nil, fmt.Errorf("read progress at %s: %w", leg.To.Ref(), err)
	}
	if f := st.Fence(leg.ID); f != nil {
		return nil, fmt.Errorf("%w: %s (route epoch %d)", ErrAlreadyFailedOver, f.Reason, f.Epoch)
	}
	rep.Epoch = 1 + st.LastEpoch(leg.ID)

	// The source's last stable offsets of the leg's topics, if reachable.
	ends, err := sourceEnds(ctx, o)
	rep.SourceReachable = err == nil
	if err != nil {
		step("source %s unreachable (%v): unplanned failover, no drain", leg.From.Ref(), err)
	}

	// Drain: wait until the mirror has everything the source had when the
	// failover began, or stops advancing.
	if rep.SourceReachable && !o.DryRun {
		ds := time.Now()
		rep.Drained, err = drain(ctx, o, store, st, ends)
		rep.DrainSeconds = time.Since(ds).Seconds()
		if err != nil {
			return nil, err
		}
		if rep.Drained {
			step("drained in %.1fs: the mirror holds everything the source had", rep.DrainSeconds)
		} else {
			step("drain stopped after %.1fs without catching up", rep.DrainSeconds)
		}
	}

	// The fence comes before the final group sync: from then on the
	// receiving gateway commits no group offsets of the leg (it could
	// otherwise commit an older translation after this one), and the
	// progress read after the fence is final, so the translation is exact.
	if !o.DryRun {
		if err := fence(ctx, o, store, st, rep); err != nil {
			return rep, err
		}
		step("fenced leg %s at route epoch %d: the old direction cannot write to %s", leg.ID, rep.Epoch, leg.To.Ref())
	}

	// Final group sync, while the source is still readable (a dry run
	// translates but commits nothing).
	if leg.SyncsGroups() && rep.SourceReachable {
		if rep.Groups, err = finalGroupSync(ctx, o, st.OffsetMap(leg.ID)); err != nil {
			return rep, err
		}
		if o.DryRun {
			step("would commit %d consumer groups' translated offsets", len(rep.Groups))
		} else {
			step("synced %d consumer groups", len(rep.Groups))
		}
	}

	if err := rpo(ctx, o, rep, st.Progress(leg.ID)); err != nil {
		step("data at risk estimated from the mirror's last known source lag: %v", err)
	}
	rep.Seconds = time.Since(start).Seconds()
	return rep, nil
}

// fence fences the leg at the report's epoch, then reads what was committed
// up to the fence: that is final. rep.Fenced says whether the fence was
// written when it fails.
func fence(ctx context.Context, o FailoverOptions, store *progress.Store, st *progress.State, rep *FailoverReport) error {
	reason := o.Reason
	if reason == "" {
		reason = fmt.Sprintf("failover of route %s to %s", o.Leg.Route.Name, o.Leg.To.Ref())
	}
	if _, err := store.Fence(ctx, o.Leg.ID, rep.Epoch, reason); err != nil {
		return err
	}
	rep.Fenced = true
	if err := store.Refresh(ctx, st); err != nil {
		return fmt.Errorf("fenced, but reading the final progress failed: %w", err)
	}
	return nil
}

// sourceEnds lists the last stable offsets of the leg's source partitions.
func sourceEnds(ctx context.Context, o FailoverOptions) (map[progress.TP]int64, error) {
	cctx, cancel := context.WithTimeout(ctx, o.SourceTimeout)
	defer cancel()
	cl, err := kgo.NewClient(o.Src...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	td, err := adm.ListTopics(cctx)
	if err != nil {
		return nil, err
	}
	var topics []string
	for _, name := range td.Names() {
		if o.Leg.Match(name) {
			topics = append(topics, name)
		}
	}
	ends := map[progress.TP]int64{}
	if len(topics) == 0 {
		return ends, nil
	}
	lo, err := adm.ListCommittedOffsets(cctx, topics...)
	if err != nil {
		return nil, err
	}
	if err := lo.Error(); err != nil {
		return nil, err
	}
	lo.Each(func(x kadm.ListedOffset) { ends[progress.TP{Topic: x.Topic, Partition: x.Partition}] = x.Offset })
	return ends, nil
}

// drain follows the leg's committed progress in st until it reaches ends,
// stops advancing for o.Stall, or o.Drain passes; it reports whether the
// mirror caught up.
func drain(ctx context.Context, o FailoverOptions, store *progress.Store, st *progress.State, ends map[progress.TP]int64) (bool, error) {
	deadline := time.Now().Add(o.Drain)
	var (
		lastRemaining int64 = -1
		lastMove            = time.Now()
	)
	for {
		if err := store.Refresh(ctx, st); err != nil {
			return false, err
		}
		committed := st.Progress(o.Leg.ID)
		var remaining int64
		for k, end := range ends {
			next := int64(0)
			if p := committed[k]; p != nil {
				next = p.Next
			}
			if end > next {
				remaining += end - next
			}
		}
		if o.Progress != nil {
			o.Progress(remaining)
		}
		if remaining == 0 {
			return true, nil
		}
		if remaining != lastRemaining {
			lastRemaining, lastMove = remaining, time.Now()
		}
		if time.Now().After(deadline) || time.Since(lastMove) > o.Stall {
			return false, nil
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func finalGroupSync(ctx context.Context, o FailoverOptions, omap *progress.OffsetMap) ([]GroupFailover, error) {
	cl, err := kgo.NewClient(o.Src...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	listed, err := kadm.NewClient(cl).ListGroups(ctx)
	if err != nil {
		return nil, fmt.Errorf("list groups at %s: %w", o.Leg.From.Ref(), err)
	}
	dcl, err := kgo.NewClient(o.Dst...)
	if err != nil {
		return nil, err
	}
	defer dcl.Close()
	dadm := kadm.NewClient(dcl)
	var out []GroupFailover
	groups := listed.Groups()
	sort.Strings(groups)
	for _, g := range groups {
		if !o.Leg.MatchGroup(g) {
			continue
		}
		ts, err := translateGroup(ctx, o.Leg, o.Src, omap, g)
		if err != nil {
			return nil, err
		}
		gf := GroupFailover{Group: g, Partitions: ts}
		d, err := dadm.DescribeGroups(ctx, g)
		if err == nil && d[g].Err == nil && len(d[g].Members) > 0 {
			gf.Active = true
			out = append(out, gf)
			continue
		}
		os := kadm.Offsets{}
		for _, t := range ts {
			if t.Status == progress.Exact || t.Status == progress.CaughtUp {
				os.Add(kadm.Offset{Topic: t.DestTopic, Partition: t.Partition, At: t.Dest, LeaderEpoch: -1,
					Metadata: fmt.Sprintf("meridian failover: %s %s/%d@%d", o.Leg.ID, t.Topic, t.Partition, t.Source)})
			}
		}
		if len(os) > 0 && !o.DryRun {
			if err := dadm.CommitAllOffsets(ctx, g, os); err != nil {
				return nil, fmt.Errorf("commit offsets of group %s at %s: %w", g, o.Leg.To.Ref(), err)
			}
			gf.Committed = true
		}
		out = append(out, gf)
	}
	return out, nil
}

// rpo fills the data at risk: per partition, the committed source records
// at or after the mirror's position, counted by reading the source; or, if
// the source cannot be read, the mirror's last known lag.
func rpo(ctx context.Context, o FailoverOptions, rep *FailoverReport, committed map[progress.TP]*progress.Record) error {
	parts := map[progress.TP]*PartitionAtRisk{}
	get := func(k progress.TP) *PartitionAtRisk {
		p := parts[k]
		if p == nil {
			p = &PartitionAtRisk{Topic: k.Topic, Partition: k.Partition, SourceEnd: -1}
			if pr := committed[k]; pr != nil {
				p.Mirrored = pr.Next
			}
			parts[k] = p
		}
		return p
	}
	for k := range committed {
		get(k)
	}
	finish := func() {
		rep.Partitions = rep.Partitions[:0]
		for _, p := range parts {
			rep.RPORecords += p.RecordsAtRisk
			rep.RPOSeconds = max(rep.RPOSeconds, p.SecondsAtRisk)
			rep.Partitions = append(rep.Partitions, *p)
		}
		sort.Slice(rep.Partitions, func(i, j int) bool {
			a, b := rep.Partitions[i], rep.Partitions[j]
			if a.Topic != b.Topic {
				return a.Topic < b.Topic
			}
			return a.Partition < b.Partition
		})
	}
	ends, err := sourceEnds(ctx, o)
	if err != nil {
		for k, pr := range committed {
			p := get(k)
			if pr.HWM > pr.Next {
				p.RecordsAtRisk = pr.HWM - pr.Next
			}
		}
		finish()
		return err
	}
	from := map[string]map[int32]int64{}
	topics := map[string]bool{}
	for k, end := range ends {
		p := get(k)
		p.SourceEnd = end
		topics[k.Topic] = true
		if from[k.Topic] == nil {
			from[k.Topic] = map[int32]int64{}
		}
		from[k.Topic][k.Partition] = p.Mirrored
	}
	names := make([]string, 0, len(topics))
	for t := range topics {
		names = append(names, t)
	}
	newest := map[progress.TP]int64{}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	err = kread.EachFrom(rctx, o.Src, names, from, func(r *kgo.Record) {
		k := progress.TP{Topic: r.Topic, Partition: r.Partition}
		get(k).RecordsAtRisk++
		newest[k] = max(newest[k], r.Timestamp.UnixMilli())
	})
	if err != nil {
		finish()
		return err
	}
	for k, ts := range newest {
		last := int64(0)
		if pr := committed[k]; pr != nil {
			last = pr.LastTS
		}
		if last > 0 && ts > last {
			get(k).SecondsAtRisk = float64(ts-last) / 1000
		}
	}
	rep.RPOExact = true
	finish()
	return nil
}
