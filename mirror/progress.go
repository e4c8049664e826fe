package mirror

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/internal/kread"
)

// ProgressTopic is the destination-cluster topic where each leg's progress is
// committed in the same transaction as the mirrored records.
const ProgressTopic = "__meridian_progress"

// progressPartitions is the partition count of ProgressTopic when meridian
// creates it.
const progressPartitions = 8

// tp names one partition of a topic.
type tp struct {
	Topic     string
	Partition int32
}

func (t tp) String() string { return t.Topic + "/" + strconv.Itoa(int(t.Partition)) }

// Progress is one progress record: after this transaction, the source
// partition (Topic, Partition) of Leg is mirrored up to Next (exclusive).
//
// Ranges is the exact offset map of the partition since its last sealed
// segment: each entry [src, dst, n] says source offsets src..src+n-1 were
// written to destination offsets dst..dst+n-1 of DestTopic, same partition.
// Seg is the number of the next segment to seal.
//
// # Compaction
//
// ProgressTopic is compacted, so only the latest progress record per leg
// and partition survives. The offset map must not shrink with it: once
// Ranges would hold more than tailRanges entries, the transaction that
// grows it also writes them as a segment (Kind "segment", its own key with
// the segment number, its ranges in Ranges) and the progress record starts
// again from none. A partition's map is then its live segments plus the
// latest progress record. Segments whose destination records retention has
// deleted are tombstoned (see sink.prune), which keeps the topic, and a
// receiver's start-up read of it, in proportion to the destination's
// retention.
type Progress struct {
	V         int    `json:"v"`              // format version, 2
	Kind      string `json:"kind,omitempty"` // "" for progress; "segment"; "fence" for a Fence
	Leg       string `json:"leg"`
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	DestTopic string `json:"dest_topic"`
	Next      int64  `json:"next"`
	HWM       int64  `json:"hwm"`     // source high watermark when read
	LastTS    int64  `json:"last_ts"` // timestamp (ms) of the last record mirrored
	Epoch     uint64 `json:"epoch"`
	Ranges    Ranges `json:"ranges"`
	Seg       int64  `json:"seg,omitempty"`
	At        int64  `json:"at"` // commit time, Unix ms
}

const (
	progressVersion = 2
	kindSegment     = "segment"
)

// tailRanges is how many ranges a progress record carries before they are
// sealed into a segment: about 0.5 KiB packed.
var tailRanges = 128

func segmentKey(leg string, t tp, seg int64) []byte {
	return []byte(leg + "\x00" + t.Topic + "\x00" + strconv.Itoa(int(t.Partition)) + "\x00seg\x00" + strconv.FormatInt(seg, 10))
}

// segRef is a live segment of a partition's offset map.
type segRef struct {
	seg    int64
	dstEnd int64 // destination offset after its last range
}

func progressKey(leg string, t tp) []byte {
	return []byte(leg + "\x00" + t.Topic + "\x00" + strconv.Itoa(int(t.Partition)))
}

func encodeProgress(p *Progress) []byte {
	b, _ := json.Marshal(p) // cannot fail: plain struct
	return b
}

func decodeProgress(b []byte) (*Progress, error) {
	var p Progress
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("decode progress: %w", err)
	}
	if p.Kind != kindFence && p.V != progressVersion { // fences have their own versions

		return nil, fmt.Errorf("decode progress: unknown format version %d", p.V)
	}
	return &p, nil
}

// ensureProgressTopic creates ProgressTopic if it does not exist and returns
// its partition count once the cluster's metadata shows it.
func ensureProgressTopic(ctx context.Context, adm *kadm.Client) (int32, error) {
	created := false
	for attempt := 0; ; attempt++ {
		td, err := adm.ListTopicsWithInternal(ctx, ProgressTopic)
		if err != nil {
			return 0, fmt.Errorf("list %s: %w", ProgressTopic, err)
		}
		if d, ok := td[ProgressTopic]; ok && d.Err == nil && len(d.Partitions) > 0 {
			return int32(len(d.Partitions)), nil
		}
		if attempt == 50 {
			return 0, fmt.Errorf("%s: created but not visible in metadata", ProgressTopic)
		}
		if !created {
			resp, err := adm.CreateTopic(ctx, progressPartitions, -1, progressTopicConfigs, ProgressTopic)
			if err == nil {
				err = resp.Err
			}
			if err != nil && !isExists(err) {
				return 0, fmt.Errorf("create %s: %w", ProgressTopic, err)
			}
			created = true
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// progressTopicConfigs keep the latest record per key forever: progress,
// offset-map segments until tombstoned, fences.
var progressTopicConfigs = map[string]*string{"cleanup.policy": ptr("compact"), "retention.ms": ptr("-1")}

func ptr[T any](v T) *T { return &v }

// loadProgress reads the committed progress of the given legs (all when legs
// is empty) from the destination cluster: the latest record per leg and
// partition. It reads with read_committed up to the last stable offset seen
// at the start, so it must run after the legs' transactional producers have
// been initialised (which aborts any transaction a previous instance left
// open).
func loadProgress(ctx context.Context, opts []kgo.Opt, legs map[string]bool) (map[string]map[tp]*Progress, error) {
	st, err := loadState(ctx, opts, legs)
	if err != nil {
		return nil, err
	}
	return st.progress, nil
}

// committedState is what the progress topic holds for some legs: the latest
// progress per partition, the latest fence, and the offset maps.
type committedState struct {
	progress map[string]map[tp]*Progress
	fences   map[string]*Fence
	maps     map[string]*OffsetMap      // every committed range, per leg
	segs     map[string]map[tp][]segRef // live segments, per leg, in order
}

// loadState reads the progress topic (see loadProgress).
func loadState(ctx context.Context, opts []kgo.Opt, legs map[string]bool) (*committedState, error) {
	admCl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, err
	}
	_, err = ensureProgressTopic(ctx, kadm.NewClient(admCl))
	admCl.Close()
	if err != nil {
		return nil, err
	}
	st := &committedState{progress: map[string]map[tp]*Progress{}, fences: map[string]*Fence{},
		maps: map[string]*OffsetMap{}, segs: map[string]map[tp][]segRef{}}
	segments := map[string]*Progress{} // by key; tombstones delete
	var bad int
	err = kread.Each(ctx, opts, []string{ProgressTopic}, func(r *kgo.Record) {
		if r.Value == nil { // a tombstone: its segment's records are gone
			delete(segments, string(r.Key))
			return
		}
		p, err := decodeProgress(r.Value)
		if err != nil {
			bad++
			return
		}
		if len(legs) > 0 && !legs[p.Leg] {
			return
		}
		switch p.Kind {
		case kindFence:
			f, err := decodeFence(r.Value)
			if err != nil {
				bad++
				return
			}
			if f.Lifted {
				delete(st.fences, f.Leg)
			} else {
				st.fences[f.Leg] = f
			}
		case kindSegment:
			segments[string(r.Key)] = p
		case "":
			m := st.progress[p.Leg]
			if m == nil {
				m = map[tp]*Progress{}
				st.progress[p.Leg] = m
			}
			m[tp{p.Topic, p.Partition}] = p
		default:
			bad++
		}
	})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", ProgressTopic, err)
	}
	if bad > 0 {
		return nil, fmt.Errorf("read %s: %d records are not meridian progress records (written by a newer version, or by something else?)", ProgressTopic, bad)
	}
	// The offset maps: live segments, then each partition's latest tail.
	ranges := map[string]map[tp][]offRange{}
	addRanges := func(p *Progress) {
		if ranges[p.Leg] == nil {
			ranges[p.Leg] = map[tp][]offRange{}
			st.maps[p.Leg] = newOffsetMap(p.Leg)
		}
		k := tp{p.Topic, p.Partition}
		ranges[p.Leg][k] = append(ranges[p.Leg][k], p.Ranges...)
		pm := st.maps[p.Leg].part(k, p.DestTopic)
		pm.next = max(pm.next, p.Next)
	}
	for _, p := range segments {
		addRanges(p)
		if len(p.Ranges) == 0 {
			continue
		}
		if st.segs[p.Leg] == nil {
			st.segs[p.Leg] = map[tp][]segRef{}
		}
		k := tp{p.Topic, p.Partition}
		last := p.Ranges[len(p.Ranges)-1]
		st.segs[p.Leg][k] = append(st.segs[p.Leg][k], segRef{seg: p.Seg, dstEnd: last[1] + last[2]})
	}
	for _, m := range st.progress {
		for _, p := range m {
			addRanges(p)
		}
	}
	for leg, byTP := range ranges {
		for k, rs := range byTP {
			st.maps[leg].parts[k].ranges = buildRangeSet(rs)
		}
	}
	for _, byTP := range st.segs {
		for _, refs := range byTP {
			sort.Slice(refs, func(i, j int) bool { return refs[i].seg < refs[j].seg })
		}
	}
	return st, nil
}
