package mirror

import (
	"context"
	"encoding/json"
	"fmt"
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
// Ranges is the exact offset map of the records the transaction wrote:
// each entry [src, dst, n] says source offsets src..src+n-1 were written to
// destination offsets dst..dst+n-1 of DestTopic, same partition.
type Progress struct {
	V         int        `json:"v"`              // format version, 1
	Kind      string     `json:"kind,omitempty"` // "" for progress; "fence" for a Fence
	Leg       string     `json:"leg"`
	Topic     string     `json:"topic"`
	Partition int32      `json:"partition"`
	DestTopic string     `json:"dest_topic"`
	Next      int64      `json:"next"`
	HWM       int64      `json:"hwm"`     // source high watermark when read
	LastTS    int64      `json:"last_ts"` // timestamp (ms) of the last record mirrored
	Epoch     uint64     `json:"epoch"`
	Ranges    [][3]int64 `json:"ranges"`
	At        int64      `json:"at"` // commit time, Unix ms
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
	if p.V != 1 {
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
			resp, err := adm.CreateTopic(ctx, progressPartitions, -1, map[string]*string{"retention.ms": ptr("-1")}, ProgressTopic)
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
// progress per partition and the latest fence.
type committedState struct {
	progress map[string]map[tp]*Progress
	fences   map[string]*Fence
	maps     map[string]*OffsetMap // every committed range, per leg
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
	st := &committedState{progress: map[string]map[tp]*Progress{}, fences: map[string]*Fence{}, maps: map[string]*OffsetMap{}}
	out := st.progress
	var bad int
	err = kread.Each(ctx, opts, []string{ProgressTopic}, func(r *kgo.Record) {
		p, err := decodeProgress(r.Value)
		if err != nil {
			bad++
			return
		}
		if len(legs) > 0 && !legs[p.Leg] {
			return
		}
		if p.Kind == kindFence {
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
			return
		}
		if p.Kind != "" {
			bad++
			return
		}
		m := out[p.Leg]
		if m == nil {
			m = map[tp]*Progress{}
			out[p.Leg] = m
			st.maps[p.Leg] = newOffsetMap(p.Leg)
		}
		m[tp{p.Topic, p.Partition}] = p
		st.maps[p.Leg].add(p)
	})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", ProgressTopic, err)
	}
	if bad > 0 {
		return nil, fmt.Errorf("read %s: %d records are not meridian progress records (written by a newer version, or by something else?)", ProgressTopic, bad)
	}
	return st, nil
}
