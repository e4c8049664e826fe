package progress

import (
	"sync"
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
	parts map[TP]*partMap
}

// Add records a committed progress record (or segment): its ranges after
// the end of the map.
func (m *OffsetMap) Add(p *Record) {
	m.mu.Lock()
	defer m.mu.Unlock()
	pm := m.part(TP{p.Topic, p.Partition}, p.DestTopic)
	pm.ranges.add(p.Ranges)
	pm.next = max(pm.next, p.Next)
}

func (m *OffsetMap) part(k TP, dest string) *partMap {
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

// Prune drops the map's ranges whose destination records are all before
// logStart, the destination partition's first offset: retention deleted
// them, and no consumer can be moved there.
func (m *OffsetMap) Prune(k TP, logStart int64) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if pm := m.parts[k]; pm != nil {
		return pm.ranges.pruneBelowDest(logStart)
	}
	return 0
}

// NewOffsetMap returns an empty offset map of leg.
func NewOffsetMap(leg string) *OffsetMap { return &OffsetMap{Leg: leg, parts: map[TP]*partMap{}} }

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
	pm := m.parts[TP{topic, partition}]
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

// Mirrored is what an offset map holds of one source partition.
type Mirrored struct {
	Source    TP
	DestTopic string
	// DestEnd is the destination offset after the last mirrored record;
	// with Ranges 0 nothing is mapped.
	DestEnd int64
	Ranges  int
}

// Partitions lists the map's source partitions.
func (m *OffsetMap) Partitions() []Mirrored {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]Mirrored, 0, len(m.parts))
	for k, pm := range m.parts {
		mp := Mirrored{Source: k, DestTopic: pm.dest, Ranges: pm.ranges.len()}
		if last, ok := pm.ranges.last(); ok {
			mp.DestEnd = last[1] + last[2]
		}
		out = append(out, mp)
	}
	return out
}

// TranslateBack maps a destination offset of a mirrored partition to the
// source offset a consumer resumes from: the source offset of the same
// record, or of the next mirrored one. Past the last mirrored record the
// status is Ahead and Dest the source offset after it.
func (m *OffsetMap) TranslateBack(topic string, partition int32, dst int64) Translation {
	m.mu.RLock()
	defer m.mu.RUnlock()
	t := Translation{Topic: topic, Partition: partition, Source: dst}
	pm := m.parts[TP{topic, partition}]
	if pm == nil || pm.ranges.len() == 0 {
		t.Status, t.Dest = Unmapped, -1
		return t
	}
	if r, ok := pm.ranges.search(1, dst); ok {
		if dst >= r[1] {
			t.Dest = r[0] + (dst - r[1])
		} else {
			t.Dest = r[0]
		}
		t.Status = Exact
		return t
	}
	last, _ := pm.ranges.last()
	t.Dest, t.Status = last[0]+last[2], Ahead
	return t
}
