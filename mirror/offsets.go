package mirror

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/routing"
)

// OffsetMap is the exact source→destination offset map of one leg, rebuilt
// from every progress record committed at the destination: for each source
// partition, the ranges of source offsets written and where they went, and the
// next source offset not yet mirrored.
//
// An OffsetMap is safe for concurrent use: a receiving gateway adds each
// committed transaction's ranges while translating.
type OffsetMap struct {
	Leg   string
	mu    sync.RWMutex
	parts map[tp]*partMap
}

// add records a committed progress record: its ranges after the end of
// the map.
func (m *OffsetMap) add(p *Progress) {
	m.mu.Lock()
	defer m.mu.Unlock()
	pm := m.part(tp{p.Topic, p.Partition}, p.DestTopic)
	pm.ranges.add(p.Ranges)
	pm.next = max(pm.next, p.Next)
}

func (m *OffsetMap) part(k tp, dest string) *partMap {
	pm := m.parts[k]
	if pm == nil {
		pm = &partMap{ranges: &rangeSet{}}
		m.parts[k] = pm
	}
	if dest != "" {
		pm.dest = dest
	}
	return pm
}

type partMap struct {
	dest   string
	ranges *rangeSet
	next   int64
}

// Stats says how big the map is: partitions, ranges, and an estimate of the
// memory they take.
func (m *OffsetMap) Stats() (partitions, ranges, bytes int) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, pm := range m.parts {
		partitions++
		ranges += pm.ranges.len()
		bytes += pm.ranges.memBytes()
	}
	return
}

// prune drops the map's ranges whose destination records are all before
// logStart, the destination partition's first offset: retention deleted
// them, and no consumer can be moved there.
func (m *OffsetMap) prune(k tp, logStart int64) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if pm := m.parts[k]; pm != nil {
		return pm.ranges.pruneBelowDest(logStart)
	}
	return 0
}

func newOffsetMap(leg string) *OffsetMap { return &OffsetMap{Leg: leg, parts: map[tp]*partMap{}} }

// LoadOffsetMap reads the leg's offset map from the destination cluster.
func LoadOffsetMap(ctx context.Context, dst []kgo.Opt, leg string) (*OffsetMap, error) {
	st, err := loadState(ctx, dst, map[string]bool{leg: true})
	if err != nil {
		return nil, fmt.Errorf("offset map of %s: %w", leg, err)
	}
	if m := st.maps[leg]; m != nil {
		return m, nil
	}
	return newOffsetMap(leg), nil
}

// TranslateStatus says how exact a translation is.
type TranslateStatus string

const (
	// Exact: the source offset is mirrored; the destination offset points
	// at the same record, or at the next mirrored one if the source offset
	// holds no record (a transaction marker, an aborted or compacted
	// record).
	Exact TranslateStatus = "exact"
	// CaughtUp: the source offset is at the end of what is mirrored; the
	// destination offset is the end of the mirror.
	CaughtUp TranslateStatus = "caught-up"
	// Ahead: the source offset is past what is mirrored so far. Committing
	// the end of the mirror would re-read the difference once it arrives,
	// so a group sync waits; Behind says by how many source offsets.
	Ahead TranslateStatus = "ahead-of-mirror"
	// Unmapped: nothing of this partition has been mirrored.
	Unmapped TranslateStatus = "unmapped"
)

// Translation is one source offset and its destination equivalent.
type Translation struct {
	Topic     string          `json:"topic"`
	Partition int32           `json:"partition"`
	Source    int64           `json:"source_offset"`
	DestTopic string          `json:"dest_topic"`
	Dest      int64           `json:"dest_offset"`
	Status    TranslateStatus `json:"status"`
	Behind    int64           `json:"mirror_behind,omitempty"` // with Ahead: source offsets not yet mirrored
	Mirrored  int64           `json:"mirrored_next"`           // next source offset not yet mirrored
}

// Translate maps a source offset (a consumer's next offset to read) to the
// destination offset from which a consumer reads exactly the records it has
// not read yet: nothing skipped, nothing read twice.
func (m *OffsetMap) Translate(topic string, partition int32, src int64) Translation {
	m.mu.RLock()
	defer m.mu.RUnlock()
	t := Translation{Topic: topic, Partition: partition, Source: src}
	pm := m.parts[tp{topic, partition}]
	if pm == nil || pm.ranges.len() == 0 {
		t.Status, t.Dest = Unmapped, -1
		if pm != nil {
			t.DestTopic, t.Mirrored = pm.dest, pm.next
		}
		return t
	}
	t.DestTopic, t.Mirrored = pm.dest, pm.next
	// The first range that ends after src.
	if r, ok := pm.ranges.search(0, src); ok {
		if src >= r[0] {
			t.Dest = r[1] + (src - r[0]) // inside a range: the same record
		} else {
			t.Dest = r[1] // in a gap: the next mirrored record
		}
		t.Status = Exact
		return t
	}
	last, _ := pm.ranges.last()
	t.Dest = last[1] + last[2] // after the last mirrored record
	switch {
	case src <= pm.next:
		t.Status = CaughtUp
	default:
		t.Status, t.Behind = Ahead, src-pm.next
	}
	return t
}

// TranslateGroup translates the committed offsets of a consumer group at the
// leg's source cluster, for the topics the leg mirrors.
func TranslateGroup(ctx context.Context, leg *routing.Leg, src, dst []kgo.Opt, group string) ([]Translation, error) {
	m, err := LoadOffsetMap(ctx, dst, leg.ID)
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(src...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	offs, err := kadm.NewClient(cl).FetchOffsets(ctx, group)
	if err != nil {
		return nil, fmt.Errorf("group %s at %s: %w", group, leg.From.Ref(), err)
	}
	if err := offs.Error(); err != nil {
		return nil, fmt.Errorf("group %s at %s: %w", group, leg.From.Ref(), err)
	}
	var out []Translation
	offs.Each(func(o kadm.OffsetResponse) {
		if !leg.Match(o.Topic) || o.At < 0 {
			return
		}
		t := m.Translate(o.Topic, o.Partition, o.At)
		if t.DestTopic == "" {
			t.DestTopic = leg.DestTopic(o.Topic)
		}
		out = append(out, t)
	})
	sort.Slice(out, func(i, j int) bool {
		if out[i].Topic != out[j].Topic {
			return out[i].Topic < out[j].Topic
		}
		return out[i].Partition < out[j].Partition
	})
	return out, nil
}
