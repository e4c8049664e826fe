package progress

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
)

// Topic is the destination-cluster topic where each leg's progress is
// committed in the same transaction as the mirrored records.
const Topic = "__meridian_progress"

// topicPartitions is the partition count of Topic when meridian creates it.
const topicPartitions = 8

// TP names one partition of a topic.
type TP struct {
	Topic     string
	Partition int32
}

func (t TP) String() string { return t.Topic + "/" + strconv.Itoa(int(t.Partition)) }

// Record is one progress record: after this transaction, the source
// partition (Topic, Partition) of Leg is mirrored up to Next (exclusive).
//
// Ranges is the exact offset map of the partition since its last sealed
// segment: each entry [src, dst, n] says source offsets src..src+n-1 were
// written to destination offsets dst..dst+n-1 of DestTopic, same partition.
// Seg is the number of the next segment to seal.
//
// # Compaction
//
// Topic is compacted, so only the latest progress record per leg and
// partition survives. The offset map must not shrink with it: once Ranges
// would hold more than the sink's tail length (mirror.Tuning.TailRanges),
// the transaction that grows it also writes them as a segment (Kind
// KindSegment, its own key with the segment number, its ranges in Ranges)
// and the progress record starts again from none. A partition's map is then
// its live segments plus the latest progress record. Segments whose
// destination records retention has deleted are tombstoned (by the sink),
// which keeps the topic, and a receiver's start-up read of it, in
// proportion to the destination's retention.
type Record struct {
	V         int    `json:"v"`              // format version, 2
	Kind      string `json:"kind,omitempty"` // "" for progress; KindSegment; KindFence for a Fence
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

// Format version and kinds of a Record.
const (
	Version     = 2
	KindSegment = "segment"
	KindFence   = "fence"
)

// TP is the source partition the record is about.
func (r *Record) TP() TP { return TP{r.Topic, r.Partition} }

// Key is the Topic key of a leg's progress record for source partition t.
func Key(leg string, t TP) []byte {
	return []byte(leg + "\x00" + t.Topic + "\x00" + strconv.Itoa(int(t.Partition)))
}

// SegmentKey is the Topic key of segment seg of a leg's partition t.
func SegmentKey(leg string, t TP, seg int64) []byte {
	return []byte(leg + "\x00" + t.Topic + "\x00" + strconv.Itoa(int(t.Partition)) + "\x00seg\x00" + strconv.FormatInt(seg, 10))
}

// SegRef is a live segment of a partition's offset map.
type SegRef struct {
	Seg    int64
	DstEnd int64 // destination offset after its last range
}

// Encode is the record's value in Topic.
func Encode(r *Record) []byte {
	b, _ := json.Marshal(r) // cannot fail: plain struct
	return b
}

// MaxValueBytes caps a progress or fence record's value as read from
// Topic. A record holds one segment of an offset map (at most a few hundred
// KiB); anything larger did not come from a Store, and is refused before
// it is parsed, since any client of the destination may write to Topic.
const MaxValueBytes = 4 << 20

func decode(b []byte) (*Record, error) {
	if len(b) > MaxValueBytes {
		return nil, fmt.Errorf("decode progress: value of %d bytes exceeds the limit of %d", len(b), MaxValueBytes)
	}
	var p Record
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("decode progress: %w", err)
	}
	if p.Kind != KindFence && p.V != Version { // fences have their own versions
		return nil, fmt.Errorf("decode progress: unknown format version %d", p.V)
	}
	return &p, nil
}

// partitionOf is the Topic partition of a key: writers outside a Store
// (transactional sinks) must agree with it.
func partitionOf(key []byte, n int32) int32 {
	h := fnv.New32a()
	h.Write(key)
	return int32(h.Sum32() % uint32(n))
}

// ensureTopic creates Topic if it does not exist and returns its partition
// count once the cluster's metadata shows it.
func ensureTopic(ctx context.Context, adm *kadm.Client) (int32, error) {
	created := false
	for attempt := 0; ; attempt++ {
		td, err := adm.ListTopicsWithInternal(ctx, Topic)
		if err != nil {
			return 0, fmt.Errorf("list %s: %w", Topic, err)
		}
		if d, ok := td[Topic]; ok && d.Err == nil && len(d.Partitions) > 0 {
			return int32(len(d.Partitions)), nil
		}
		if attempt == 50 {
			return 0, fmt.Errorf("%s: created but not visible in metadata", Topic)
		}
		if !created {
			resp, err := adm.CreateTopic(ctx, topicPartitions, -1, topicConfigs, Topic)
			if err == nil {
				err = resp.Err
			}
			if err != nil && !isExists(err) {
				return 0, fmt.Errorf("create %s: %w", Topic, err)
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

// topicConfigs keep the latest record per key forever: progress, offset-map
// segments until tombstoned, fences.
var topicConfigs = map[string]*string{"cleanup.policy": ptr("compact"), "retention.ms": ptr("-1")}

func ptr[T any](v T) *T { return &v }
