package dr

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/internal/kread"
	"github.com/meridian-gw/meridian/mirror/progress"
	"github.com/meridian-gw/meridian/routing"
)

// HeaderResyncedFrom marks a record that failback copied from the new
// primary back to the old one: "topic/partition/offset" at the new primary.
// A retried failback resumes after the last record so marked.
const HeaderResyncedFrom = "meridian.resynced-from"

// FailbackOptions configure Failback.
type FailbackOptions struct {
	Leg *routing.Leg
	// Src is the old primary (the leg's source), Dst the new primary (the
	// leg's destination, where the leg is fenced).
	Src, Dst []kgo.Opt
	DryRun   bool
}

// FailbackReport says what a failback did.
type FailbackReport struct {
	Leg    string `json:"leg"`
	From   string `json:"old_primary"`
	To     string `json:"new_primary"`
	DryRun bool   `json:"dry_run"`
	Epoch  uint64 `json:"epoch"`
	// Stragglers are the old primary's records that never reached the new
	// primary. They are kept at the old primary and not mirrored later
	// (they would land after the new primary's own records).
	Stragglers []StragglerRecord `json:"stragglers"`
	// Resynced counts, per partition, the new primary's records copied back.
	Resynced map[string]int64 `json:"resynced"`
	Groups   []GroupFailover  `json:"groups"`
	Steps    []string         `json:"steps"`
	Seconds  float64          `json:"seconds"`
}

// StragglerRecord is one record of the old primary that never reached the
// new primary.
type StragglerRecord struct {
	Topic     string    `json:"topic"`
	Partition int32     `json:"partition"`
	Offset    int64     `json:"offset"`
	Key       string    `json:"key,omitempty"`
	Timestamp time.Time `json:"timestamp"`
}

// ErrNotFailedOver is returned by Failback for a leg that is not fenced.
var ErrNotFailedOver = fmt.Errorf("leg is not failed over")

// Failback returns a failed-over leg to its original direction: it lists the
// old primary's records that never reached the new primary, copies the
// records produced at the new primary since the failover back to the old
// one (same partitions, in order), moves the leg's progress past them so
// that nothing is mirrored twice, translates the route's consumer groups
// back, and lifts the fence so mirroring resumes.
func Failback(ctx context.Context, o FailbackOptions) (*FailbackReport, error) {
	start := time.Now()
	leg := o.Leg
	rep := &FailbackReport{Leg: leg.ID, From: leg.From.Ref(), To: leg.To.Ref(), DryRun: o.DryRun, Resynced: map[string]int64{}}
	step := func(format string, args ...any) { rep.Steps = append(rep.Steps, fmt.Sprintf(format, args...)) }

	store, err := progress.Open(ctx, o.Dst)
	if err != nil {
		return nil, err
	}
	defer store.Close()
	st, err := store.Load(ctx, leg.ID)
	if err != nil {
		return nil, err
	}
	fence := st.Fence(leg.ID)
	if fence == nil {
		return nil, fmt.Errorf("%s: %w", leg.ID, ErrNotFailedOver)
	}
	rep.Epoch = fence.Epoch + 1
	committed := st.Progress(leg.ID)
	omap := st.OffsetMap(leg.ID)
	srcCl, err := kgo.NewClient(o.Src...)
	if err != nil {
		return nil, err
	}
	defer srcCl.Close()
	sadm := kadm.NewClient(srcCl)
	if _, err := sadm.ListTopics(ctx); err != nil {
		return nil, fmt.Errorf("old primary %s unreachable: %w", leg.From.Ref(), err)
	}

	// 1. Stragglers: at the old primary from the mirror's position on, minus
	// records a previous failback copied in.
	names, copied, err := stragglers(ctx, o, rep, committed)
	if err != nil {
		return nil, err
	}
	step("%d records of the old primary never reached %s; they are kept there", len(rep.Stragglers), leg.To.Ref())

	// 2. The new primary's records since the failover: after the mirrored
	// end of each destination partition.
	recs, err := sinceFailover(ctx, o, rep, omap, copied)
	if err != nil {
		return nil, err
	}
	if o.DryRun {
		step("would copy %d records produced at %s back to %s, then lift the fence", len(recs), leg.To.Ref(), leg.From.Ref())
		rep.Seconds = time.Since(start).Seconds()
		return rep, nil
	}
	if err := copyBack(ctx, o, recs); err != nil {
		return nil, err
	}
	step("copied %d records produced at %s back to %s", len(recs), leg.To.Ref(), leg.From.Ref())

	// 3. Mirroring resumes after what the old primary holds now: its
	// stragglers and the copies are not sent again.
	if err := moveProgress(ctx, o, sadm, store, rep.Epoch, names, committed, recs); err != nil {
		return nil, err
	}

	// 4. Groups back: their offsets at the new primary, translated to the
	// old one.
	if leg.SyncsGroups() {
		if rep.Groups, err = groupsBack(ctx, o, omap, recs); err != nil {
			return nil, err
		}
		step("moved %d consumer groups back to %s", len(rep.Groups), leg.From.Ref())
	}

	// 5. Lift the fence: the leg mirrors again, from the moved progress.
	if err := store.LiftFence(ctx, leg.ID, rep.Epoch, "failback of route "+leg.Route.Name); err != nil {
		return nil, err
	}
	step("lifted the fence at route epoch %d: %s mirrors to %s again", rep.Epoch, leg.From.Ref(), leg.To.Ref())
	rep.Seconds = time.Since(start).Seconds()
	return rep, nil
}

// stragglers lists, in rep, the old primary's records from the mirror's
// position on that a previous failback did not copy in. It returns the
// leg's source topics and, per new-primary "topic/partition", the last
// offset already copied back.
func stragglers(ctx context.Context, o FailbackOptions, rep *FailbackReport, committed map[progress.TP]*progress.Record) ([]string, map[string]int64, error) {
	srcTopics := map[string]bool{}
	from := map[string]map[int32]int64{}
	for k, p := range committed {
		srcTopics[k.Topic] = true
		if from[k.Topic] == nil {
			from[k.Topic] = map[int32]int64{}
		}
		from[k.Topic][k.Partition] = p.Next
	}
	copied := map[string]int64{}
	names := keys(srcTopics)
	if len(names) == 0 {
		return names, copied, nil
	}
	err := kread.EachFrom(ctx, o.Src, names, from, func(r *kgo.Record) {
		if origin := header(r, HeaderResyncedFrom); origin != "" {
			if i := strings.LastIndexByte(origin, '/'); i > 0 {
				if off, err := strconv.ParseInt(origin[i+1:], 10, 64); err == nil {
					copied[origin[:i]] = max(copied[origin[:i]], off)
				}
			}
			return
		}
		rep.Stragglers = append(rep.Stragglers, StragglerRecord{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset,
			Key: string(r.Key), Timestamp: r.Timestamp})
	})
	if err != nil {
		return nil, nil, fmt.Errorf("read the old primary: %w", err)
	}
	return names, copied, nil
}

// sinceFailover reads the new primary's records after the mirrored end of
// each destination partition (or after what a previous failback copied)
// and returns them as copies for the old primary, counted in rep.Resynced.
func sinceFailover(ctx context.Context, o FailbackOptions, rep *FailbackReport, omap *progress.OffsetMap, copied map[string]int64) ([]*kgo.Record, error) {
	type destPart struct {
		topic     string
		partition int32
		src       string // source topic
	}
	dstFrom := map[string]map[int32]int64{}
	parts := map[string]destPart{}
	for _, mp := range omap.Partitions() {
		if mp.Ranges == 0 {
			continue
		}
		end := mp.DestEnd
		id := mp.DestTopic + "/" + strconv.Itoa(int(mp.Source.Partition))
		if c, ok := copied[id]; ok && c+1 > end {
			end = c + 1 // resume a previous failback
		}
		if dstFrom[mp.DestTopic] == nil {
			dstFrom[mp.DestTopic] = map[int32]int64{}
		}
		dstFrom[mp.DestTopic][mp.Source.Partition] = end
		parts[id] = destPart{mp.DestTopic, mp.Source.Partition, mp.Source.Topic}
	}
	var recs []*kgo.Record
	if len(dstFrom) == 0 {
		return recs, nil
	}
	if err := kread.EachFrom(ctx, o.Dst, keys(dstFrom), dstFrom, func(r *kgo.Record) {
		dp := parts[r.Topic+"/"+strconv.Itoa(int(r.Partition))]
		if dp.src == "" {
			return
		}
		hs := append(append([]kgo.RecordHeader(nil), r.Headers...), kgo.RecordHeader{Key: HeaderResyncedFrom,
			Value: []byte(fmt.Sprintf("%s/%d/%d", r.Topic, r.Partition, r.Offset))})
		recs = append(recs, &kgo.Record{Topic: dp.src, Partition: r.Partition, Key: r.Key, Value: r.Value, Headers: hs, Timestamp: r.Timestamp})
		rep.Resynced[dp.src+"/"+strconv.Itoa(int(r.Partition))]++
	}); err != nil {
		return nil, fmt.Errorf("read the new primary: %w", err)
	}
	return recs, nil
}

// copyBack writes recs to the old primary in one transaction; produced,
// each learns its offset there.
func copyBack(ctx context.Context, o FailbackOptions, recs []*kgo.Record) error {
	if len(recs) == 0 {
		return nil
	}
	pcl, err := kgo.NewClient(append(append([]kgo.Opt{}, o.Src...),
		kgo.TransactionalID("meridian-failback-"+o.Leg.ID), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.MaxBufferedRecords(1<<20))...)
	if err != nil {
		return err
	}
	defer pcl.Close()
	if err := pcl.BeginTransaction(); err != nil {
		return err
	}
	if err := pcl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		_ = pcl.EndTransaction(context.WithoutCancel(ctx), kgo.TryAbort)
		return fmt.Errorf("copy back to %s: %w", o.Leg.From.Ref(), err)
	}
	if err := pcl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		return fmt.Errorf("copy back to %s: %w", o.Leg.From.Ref(), err)
	}
	return nil
}

// moveProgress moves the leg's progress to what the old primary holds now,
// its stragglers and the copies included, so that none is mirrored again.
// The copies map exactly to their originals: the moved progress carries
// those ranges, so the offset map stays exact.
func moveProgress(ctx context.Context, o FailbackOptions, sadm *kadm.Client, store *progress.Store, epoch uint64,
	names []string, committed map[progress.TP]*progress.Record, copies []*kgo.Record) error {
	ends, err := sadm.ListCommittedOffsets(ctx, names...)
	if err != nil {
		return fmt.Errorf("old primary offsets: %w", err)
	}
	copyRanges := map[progress.TP][][3]int64{}
	copyEnd := map[progress.TP]int64{} // after each partition's last copy
	for _, r := range copies {
		k := progress.TP{Topic: r.Topic, Partition: r.Partition}
		copyEnd[k] = max(copyEnd[k], r.Offset+1)
	}
	for _, r := range copies {
		origin := header(r, HeaderResyncedFrom)
		b, _ := strconv.ParseInt(origin[strings.LastIndexByte(origin, '/')+1:], 10, 64)
		k := progress.TP{Topic: r.Topic, Partition: r.Partition}
		rs := copyRanges[k]
		if n := len(rs); n > 0 && rs[n-1][0]+rs[n-1][2] == r.Offset && rs[n-1][1]+rs[n-1][2] == b {
			rs[n-1][2]++
		} else {
			copyRanges[k] = append(rs, [3]int64{r.Offset, b, 1})
		}
	}
	var moved []*progress.Record
	ends.Each(func(x kadm.ListedOffset) {
		k := progress.TP{Topic: x.Topic, Partition: x.Partition}
		p := committed[k]
		// The copies' transaction has committed, but Kafka writes its
		// markers after EndTransaction returns: until then the last
		// stable offset stays at the first copy, and progress moved
		// there would mirror the copies back to where they came from.
		// Their own offsets say where they end.
		x.Offset = max(x.Offset, copyEnd[k])
		if p == nil || x.Offset <= p.Next {
			return
		}
		// The ranges since the last sealed segment stay in the progress
		// record (the topic is compacted), followed by the copies'.
		moved = append(moved, &progress.Record{V: progress.Version, Leg: o.Leg.ID, Topic: k.Topic, Partition: k.Partition, DestTopic: p.DestTopic,
			Next: x.Offset, HWM: x.Offset, LastTS: p.LastTS, Epoch: epoch, At: time.Now().UnixMilli(),
			Ranges: slices.Concat(p.Ranges, copyRanges[k]), Seg: p.Seg})
	})
	if err := store.Write(ctx, moved...); err != nil {
		return fmt.Errorf("move the leg's progress: %w", err)
	}
	return nil
}

// groupsBack translates the route's groups' offsets at the new primary to
// the old primary: a mirrored record maps back through the offset map, a
// record produced at the new primary to its copy (copies carry offsets now).
func groupsBack(ctx context.Context, o FailbackOptions, omap *progress.OffsetMap, copies []*kgo.Record) ([]GroupFailover, error) {
	dcl, err := kgo.NewClient(o.Dst...)
	if err != nil {
		return nil, err
	}
	defer dcl.Close()
	dadm := kadm.NewClient(dcl)
	scl, err := kgo.NewClient(o.Src...)
	if err != nil {
		return nil, err
	}
	defer scl.Close()
	sadm := kadm.NewClient(scl)
	listed, err := dadm.ListGroups(ctx)
	if err != nil {
		return nil, err
	}
	// destination "topic/partition" → sorted (new-primary offset, old-primary offset) of copies
	type pair struct{ dst, src int64 }
	copyAt := map[string][]pair{}
	for _, r := range copies {
		origin := header(r, HeaderResyncedFrom)
		i := strings.LastIndexByte(origin, '/')
		off, _ := strconv.ParseInt(origin[i+1:], 10, 64)
		copyAt[origin[:i]] = append(copyAt[origin[:i]], pair{off, r.Offset})
	}
	back := map[string]string{} // destination topic → source topic
	for _, mp := range omap.Partitions() {
		back[mp.DestTopic] = mp.Source.Topic
	}
	var out []GroupFailover
	groups := listed.Groups()
	sort.Strings(groups)
	for _, g := range groups {
		if !o.Leg.MatchGroup(g) {
			continue
		}
		offs, err := dadm.FetchOffsets(ctx, g)
		if err != nil {
			return nil, err
		}
		gf := GroupFailover{Group: g}
		commit := kadm.Offsets{}
		offs.Each(func(x kadm.OffsetResponse) {
			srcTopic, ok := back[x.Topic]
			if !ok || x.At < 0 {
				return
			}
			t := omap.TranslateBack(srcTopic, x.Partition, x.At)
			if t.Status == progress.Ahead {
				// Past the mirrored records. A group that has read none of
				// the new primary's own records resumes right after them,
				// before the stragglers, so it reads those too; one that has
				// resumes at the copy of its next record.
				t.Status = progress.Exact
				ps := copyAt[x.Topic+"/"+strconv.Itoa(int(x.Partition))]
				i := sort.Search(len(ps), func(i int) bool { return ps[i].dst >= x.At })
				switch {
				case i == 0:
				case i < len(ps):
					t.Dest = ps[i].src
				default:
					t.Dest = ps[len(ps)-1].src + 1
				}
			}
			t.Topic, t.DestTopic = x.Topic, srcTopic
			gf.Partitions = append(gf.Partitions, t)
			commit.Add(kadm.Offset{Topic: srcTopic, Partition: x.Partition, At: t.Dest, LeaderEpoch: -1,
				Metadata: "meridian failback: " + o.Leg.ID})
		})
		d, err := sadm.DescribeGroups(ctx, g)
		if err == nil && d[g].Err == nil && len(d[g].Members) > 0 {
			gf.Active = true
		} else if len(commit) > 0 {
			if err := sadm.CommitAllOffsets(ctx, g, commit); err != nil {
				return nil, fmt.Errorf("commit group %s at %s: %w", g, o.Leg.From.Ref(), err)
			}
			gf.Committed = true
		}
		out = append(out, gf)
	}
	return out, nil
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
