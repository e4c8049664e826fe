package lab

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/internal/kafkatest"
	"github.com/meridian-gw/meridian/internal/kread"
	"github.com/meridian-gw/meridian/mirror/dr"
	"github.com/meridian-gw/meridian/routing"
)

// OffsetRow is one consumer group after a planned failover, for one
// mirror: the group had consumed all but Lag records of the source topic;
// at the destination a consumer starts from the group's offsets there (the
// mirror's translation) and reads to the end. ReRead counts records it
// reads that the group had consumed at the source, Skipped the records the
// group had not consumed and the consumer never reads. NoOffset counts
// partitions where the destination had no offset for the group (a
// consumer then starts where auto.offset.reset says; counted here as from
// the beginning).
type OffsetRow struct {
	Contender string `json:"contender"`
	Group     string `json:"group"`
	Lag       int64  `json:"lag"`
	ReRead    int64  `json:"reread"`
	Skipped   int64  `json:"skipped"`
	NoOffset  int    `json:"no_offset_partitions"`
}

// SyncResult holds how soon things reach the destination, per contender
// (meridian-records, mm2).
type SyncResult struct {
	// NewTopic is the time from creating a matching topic at the source
	// (and producing one record to it) until the destination topic exists;
	// NewTopicRecord until that record can be read there.
	NewTopic       map[string]float64 `json:"new_topic_s"`
	NewTopicRecord map[string]float64 `json:"new_topic_record_s"`
	// Group sync lag: for each commit at the source (a live group
	// committing every 500 ms behind a producer), the time until the
	// destination group's offset reaches the exact translation of that
	// commit (the destination offset of the record the group would read
	// next). Commits is how many were made, Unresolved how many had not
	// been reached when the measurement ended.
	SyncP50    map[string]float64 `json:"group_sync_p50_s"`
	SyncP99    map[string]float64 `json:"group_sync_p99_s"`
	SyncMax    map[string]float64 `json:"group_sync_max_s"`
	Commits    int                `json:"commits"`
	Unresolved map[string]int     `json:"unresolved"`
}

const (
	offTopic   = "off.t"
	offParts   = 4
	liveTopic  = "off.live"
	groupsExpr = "g-off-.*"
)

// groupsAndTopics runs meridian (record mode) and MirrorMaker 2 side by
// side on the "off." topics: first the sync figures (with sync), then the
// offsets row (with offsets).
func (e *mm2Env) groupsAndTopics(ctx context.Context, offsets, syncs bool) (rows []OffsetRow, sr *SyncResult, err error) {
	perPart := int64(2000)
	for _, l := range e.o.Lags {
		perPart = max(perPart, l/offParts+2000)
	}
	if err := createTopics(e.srcOpts(), offParts, []string{offTopic}); err != nil {
		return nil, nil, err
	}
	if err := createTopics(e.srcOpts(), 1, []string{liveTopic}); err != nil {
		return nil, nil, err
	}
	l, err := e.meridianLab("off", `^off\.`, "m", "^"+groupsExpr+"$", false)
	if err != nil {
		return nil, nil, err
	}
	defer l.Close()
	for _, g := range []string{HQGateway, EdgeGateway} {
		if err := l.Start(g); err != nil {
			return nil, nil, err
		}
	}
	mm, alias, err := e.startMM2(`off\..*`, groupsExpr)
	if err != nil {
		return nil, nil, err
	}
	defer mm.Stop()
	dstTopic := map[string]func(string) string{
		ContenderRecords: func(t string) string { return "m." + t },
		ContenderMM2:     func(t string) string { return alias + "." + t },
	}
	fmt.Fprintf(e.o.Out, "offsets: %d records in each of %d partitions of %s\n", perPart, offParts, offTopic)
	if err := e.fillPartitions(ctx, offTopic, offParts, perPart); err != nil {
		return nil, nil, err
	}
	if err := e.waitMirrored(ctx, mm, dstTopic, offTopic, perPart*offParts); err != nil {
		return nil, nil, err
	}
	if syncs {
		fmt.Fprintln(e.o.Out, "sync: new topic, then a live group for 20 s")
		if sr, err = e.measureSync(ctx, dstTopic); err != nil {
			return nil, nil, err
		}
	}
	if !offsets {
		return nil, sr, nil
	}
	// The groups consume at the source; then both mirrors get time to
	// sync them (planned failover: no producer, mirrors caught up).
	sadm, err := e.admin(e.srcOpts())
	if err != nil {
		return nil, nil, err
	}
	defer sadm.Close()
	committed := map[string]map[int32]int64{}
	for _, lag := range e.o.Lags {
		g := fmt.Sprintf("g-off-lag%d", lag)
		committed[g] = map[int32]int64{}
		offs := kadm.Offsets{}
		for p := range int32(offParts) {
			at := perPart - lag/offParts
			if p < int32(lag%offParts) {
				at--
			}
			committed[g][p] = at
			offs.AddOffset(offTopic, p, at, -1)
		}
		if _, err := sadm.CommitOffsets(ctx, g, offs); err != nil {
			return nil, nil, fmt.Errorf("commit %s: %w", g, err)
		}
	}
	fmt.Fprintln(e.o.Out, "offsets: groups committed at the source; waiting until the destination's offsets stay the same for 10 s")
	dadm, err := e.admin(e.dstOpts())
	if err != nil {
		return nil, nil, err
	}
	defer dadm.Close()
	var groups []string
	for g := range committed {
		groups = append(groups, g)
	}
	slices.Sort(groups)
	snapshot := func() map[string]int64 {
		out := map[string]int64{}
		for _, r := range dadm.FetchManyOffsets(ctx, groups...) {
			r.Fetched.Each(func(o kadm.OffsetResponse) {
				if o.Err == nil {
					out[fmt.Sprintf("%s/%s/%d", r.Group, o.Topic, o.Partition)] = o.At
				}
			})
		}
		return out
	}
	var last map[string]int64
	stableSince, began := time.Now(), time.Now()
	for time.Since(stableSince) < 10*time.Second && time.Since(began) < 2*time.Minute {
		now := snapshot()
		if !mapsEqual(now, last) {
			last, stableSince = now, time.Now()
		}
		if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
			return nil, nil, err
		}
	}
	// Failover. Meridian's is its planned failover (mirror/dr, what
	// `meridian failover` runs): drain, the fence, a final group sync.
	// MirrorMaker 2 has none: its synced offsets are what consumers get.
	rep, err := e.failover(ctx, l, "off")
	if err != nil {
		return nil, nil, fmt.Errorf("meridian failover: %w", err)
	}
	e.failoverSeconds = rep.Seconds
	fmt.Fprintf(e.o.Out, "offsets: meridian failover in %.2f s (drained %v, %d groups synced)\n", rep.Seconds, rep.Drained, len(rep.Groups))
	if err := mm.Stop(); err != nil {
		return nil, nil, err
	}
	if err := l.Close(); err != nil {
		e.o.Logger.Warn("stop meridian", "err", err)
	}
	last = snapshot()
	for _, c := range []string{ContenderRecords, ContenderMM2} {
		dt := dstTopic[c](offTopic)
		for _, g := range groups {
			row := OffsetRow{Contender: c, Group: g}
			fmt.Sscanf(g, "g-off-lag%d", &row.Lag)
			from := map[string]map[int32]int64{dt: {}}
			for p := range int32(offParts) {
				at, ok := last[fmt.Sprintf("%s/%s/%d", g, dt, p)]
				if !ok || at < 0 {
					row.NoOffset++
					at = 0
				}
				from[dt][p] = at
			}
			seen := map[int32]map[int64]bool{}
			err := kread.EachFrom(ctx, e.dstOpts(), []string{dt}, from, func(r *kgo.Record) {
				p, seq, ok := parseOffKey(r.Key)
				if !ok || p != r.Partition {
					return
				}
				if seq < committed[g][p] {
					row.ReRead++
					return
				}
				if seen[p] == nil {
					seen[p] = map[int64]bool{}
				}
				seen[p][seq] = true
			})
			if err != nil {
				return nil, sr, fmt.Errorf("read %s from %s's offsets: %w", dt, g, err)
			}
			for p := range int32(offParts) {
				row.Skipped += (perPart - committed[g][p]) - int64(len(seen[p]))
			}
			rows = append(rows, row)
		}
	}
	return rows, sr, nil
}

// failover runs meridian's planned failover of the lab's route.
func (e *mm2Env) failover(ctx context.Context, l *Lab, route string) (*dr.FailoverReport, error) {
	table, err := routing.Compile(l.Topo, EdgeGateway)
	if err != nil {
		return nil, err
	}
	for _, p := range table.Out {
		for _, leg := range p.Legs {
			if leg.Route.Name == route {
				return dr.Failover(ctx, dr.FailoverOptions{Leg: leg, Src: l.EdgeOpts(), Dst: l.HQOpts(), Drain: time.Minute, Reason: "bench mm2"})
			}
		}
	}
	return nil, fmt.Errorf("no leg of route %s", route)
}

func (e *mm2Env) admin(opts []kgo.Opt) (*kadm.Client, error) {
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, err
	}
	return kadm.NewClient(cl), nil
}

// fillPartitions writes n records to each partition of topic, keyed
// "p<partition>-<seq>" with seq their source offset.
func (e *mm2Env) fillPartitions(ctx context.Context, topic string, parts int32, n int64) error {
	cl, err := kgo.NewClient(append(e.srcOpts(), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(5*time.Millisecond))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	var (
		once sync.Once
		perr error
	)
	val := []byte(strings.Repeat("x", 100))
	for seq := range n {
		for p := range parts {
			cl.Produce(ctx, &kgo.Record{Topic: topic, Partition: p, Key: fmt.Appendf(nil, "p%d-%d", p, seq), Value: val}, func(_ *kgo.Record, err error) {
				if err != nil {
					once.Do(func() { perr = err })
				}
			})
		}
	}
	if err := cl.Flush(ctx); err != nil {
		return err
	}
	return perr
}

func parseOffKey(k []byte) (int32, int64, bool) {
	s, ok := strings.CutPrefix(string(k), "p")
	if !ok {
		return 0, 0, false
	}
	ps, ss, ok := strings.Cut(s, "-")
	if !ok {
		return 0, 0, false
	}
	p, err1 := strconv.ParseInt(ps, 10, 32)
	seq, err2 := strconv.ParseInt(ss, 10, 64)
	return int32(p), seq, err1 == nil && err2 == nil
}

// waitMirrored waits until both destinations hold n records of topic
// (meridian's destination counted by its gateway, whose transactions add
// markers to the end offsets).
func (e *mm2Env) waitMirrored(ctx context.Context, mm *kafkatest.MirrorMaker, dst map[string]func(string) string, topic string, n int64) error {
	adm, err := e.admin(e.dstOpts())
	if err != nil {
		return err
	}
	defer adm.Close()
	began := time.Now()
	for {
		var mer int64
		err := kread.Each(ctx, e.dstOpts(), []string{dst[ContenderRecords](topic)}, func(*kgo.Record) { mer++ })
		mm2 := endSum(ctx, adm, []string{dst[ContenderMM2](topic)})
		if err == nil && mer >= n && mm2 >= n {
			return nil
		}
		select {
		case <-mm.Exited():
			return fmt.Errorf("MirrorMaker 2 exited; last lines of %s:\n%s", mm.LogFile(), mm.Tail(20))
		default:
		}
		if time.Since(began) > 5*time.Minute {
			return fmt.Errorf("%s: after 5 minutes meridian has %d, mm2 %d of %d records", topic, mer, mm2, n)
		}
		if err := sleepCtx(ctx, time.Second); err != nil {
			return err
		}
	}
}

// measureSync times a new topic's arrival and the live group's sync.
func (e *mm2Env) measureSync(ctx context.Context, dst map[string]func(string) string) (*SyncResult, error) {
	sr := &SyncResult{NewTopic: map[string]float64{}, NewTopicRecord: map[string]float64{}, SyncP50: map[string]float64{},
		SyncP99: map[string]float64{}, SyncMax: map[string]float64{}, Unresolved: map[string]int{}}
	contenders := []string{ContenderRecords, ContenderMM2}
	// kadm answers ListTopics from the client's cached metadata, which is
	// refreshed no sooner than MetadataMinAge (5 s by default): that age,
	// not the contenders, was the figure both showed (5.07 s, although the
	// gateway had created the topic after 0.55 s).
	dadm, err := e.admin(append(e.dstOpts(), kgo.MetadataMinAge(10*time.Millisecond)))
	if err != nil {
		return nil, err
	}
	defer dadm.Close()

	// A new topic, with one record.
	const newTopic = "off.new"
	created := time.Now()
	if err := createTopics(e.srcOpts(), 2, []string{newTopic}); err != nil {
		return nil, err
	}
	// MetadataMinAge: after "unknown topic" franz-go waits 5 s by default
	// before it asks again.
	pcl, err := kgo.NewClient(append(e.srcOpts(), kgo.MetadataMinAge(100*time.Millisecond))...)
	if err != nil {
		return nil, err
	}
	defer pcl.Close()
	// Produced while the destinations are polled: franz-go's first
	// produce to a topic just created can wait seconds for its metadata,
	// and waiting for it here put a floor of those seconds under both
	// contenders' figures.
	sent := make(chan error, 1)
	pcl.Produce(ctx, &kgo.Record{Topic: newTopic, Value: []byte("hello")}, func(_ *kgo.Record, err error) { sent <- err })
	defer func() {
		if err := pcl.Flush(ctx); err != nil {
			e.o.Logger.Debug("flush", "err", err)
		}
	}()
	for len(sr.NewTopicRecord) < len(contenders) && time.Since(created) < 2*time.Minute {
		select {
		case err := <-sent:
			if err != nil {
				return nil, fmt.Errorf("produce to %s: %w", newTopic, err)
			}
		default:
		}
		for _, c := range contenders {
			t := dst[c](newTopic)
			if _, ok := sr.NewTopic[c]; !ok {
				// All topics: asking for one that does not exist yet
				// would retry for seconds.
				lctx, lcancel := context.WithTimeout(ctx, time.Second)
				td, err := dadm.ListTopics(lctx)
				lcancel()
				if err == nil && td.Has(t) && td[t].Err == nil {
					sr.NewTopic[c] = time.Since(created).Seconds()
				}
			}
			if _, ok := sr.NewTopicRecord[c]; !ok && sr.NewTopic[c] > 0 {
				if countCommitted(ctx, dadm, t) > 0 {
					sr.NewTopicRecord[c] = time.Since(created).Seconds()
				}
			}
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return nil, err
		}
	}

	// A live group: a producer writes about 1,000 records/s to liveTopic,
	// the group commits the end every 500 ms for 20 s; the destination's
	// offsets are polled every 50 ms.
	const group = "g-off-live"
	type commit struct {
		at  time.Time
		off int64
	}
	type seen struct {
		at  time.Time
		off int64
	}
	var commits []commit
	polls := map[string][]seen{}
	lctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var produced int64
	var perr error
	wg.Go(func() {
		cl, err := kgo.NewClient(append(e.srcOpts(), kgo.ProducerLinger(0))...)
		if err != nil {
			perr = err
			return
		}
		defer cl.Close()
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for lctx.Err() == nil {
			var rs []*kgo.Record
			for range 10 {
				rs = append(rs, &kgo.Record{Topic: liveTopic, Key: fmt.Appendf(nil, "p0-%d", produced), Value: []byte("live")})
				produced++
			}
			if err := cl.ProduceSync(lctx, rs...).FirstErr(); err != nil && lctx.Err() == nil {
				perr = err
				return
			}
			select {
			case <-lctx.Done():
			case <-t.C:
			}
		}
	})
	wg.Go(func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for lctx.Err() == nil {
			o, err := dadm.FetchOffsets(lctx, group)
			now := time.Now()
			if err == nil {
				for _, c := range contenders {
					if r, ok := o.Lookup(dst[c](liveTopic), 0); ok && r.Err == nil {
						polls[c] = append(polls[c], seen{now, r.At})
					}
				}
			}
			select {
			case <-lctx.Done():
			case <-t.C:
			}
		}
	})
	sadm, err := e.admin(e.srcOpts())
	if err != nil {
		cancel()
		wg.Wait()
		return nil, err
	}
	defer sadm.Close()
	end := time.Now().Add(20 * time.Second)
	for time.Now().Before(end) {
		ends, err := sadm.ListEndOffsets(ctx, liveTopic)
		if err == nil {
			if lo, ok := ends.Lookup(liveTopic, 0); ok && lo.Err == nil && lo.Offset > 0 {
				offs := kadm.Offsets{}
				offs.AddOffset(liveTopic, 0, lo.Offset, -1)
				if _, err := sadm.CommitOffsets(ctx, group, offs); err == nil {
					commits = append(commits, commit{time.Now(), lo.Offset})
				}
			}
		}
		if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
			cancel()
			wg.Wait()
			return nil, err
		}
	}
	// Stop committing; keep polling 15 s more so the last commits can land.
	if err := sleepCtx(ctx, 15*time.Second); err != nil {
		cancel()
		wg.Wait()
		return nil, err
	}
	cancel()
	wg.Wait()
	if perr != nil {
		return nil, fmt.Errorf("live producer: %w", perr)
	}
	sr.Commits = len(commits)
	for _, c := range contenders {
		// The exact translation of a commit at source offset o is the
		// destination offset of the source record o.
		dt := dst[c](liveTopic)
		at := map[int64]int64{}
		rctx, rcancel := context.WithTimeout(ctx, time.Minute)
		err := kread.Each(rctx, e.dstOpts(), []string{dt}, func(r *kgo.Record) {
			if _, seq, ok := parseOffKey(r.Key); ok {
				at[seq] = r.Offset
			}
		})
		rcancel()
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", dt, err)
		}
		var lags []float64
		for _, cm := range commits {
			want, ok := at[cm.off]
			if !ok {
				sr.Unresolved[c]++
				continue
			}
			found := false
			for _, s := range polls[c] {
				if !s.at.Before(cm.at) && s.off >= want {
					lags = append(lags, s.at.Sub(cm.at).Seconds())
					found = true
					break
				}
			}
			if !found {
				sr.Unresolved[c]++
			}
		}
		if len(lags) > 0 {
			sr.SyncP50[c], sr.SyncP99[c], sr.SyncMax[c] = quantile(lags, 0.5), quantile(lags, 0.99), quantile(lags, 1)
		}
	}
	return sr, nil
}

// countCommitted is the number of committed records in topic (0 on error).
func countCommitted(ctx context.Context, adm *kadm.Client, topic string) int64 {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	ends, err := adm.ListCommittedOffsets(cctx, topic)
	if err != nil {
		return 0
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil && o.Offset > 0 {
			n += o.Offset
		}
	})
	return n
}

// quantile is the q-quantile (nearest rank) of xs, which is not empty.
func quantile(xs []float64, q float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func mapsEqual(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
