package progress

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/internal/kread"
)

// Store is the progress topic of one destination cluster: opened once (the
// topic exists, its partition count is known) and shared by whoever reads
// or writes it there — a receiving leg and its sinks, or one failover or
// failback and all of its steps.
type Store struct {
	opts  []kgo.Opt   // the destination cluster
	cl    *kgo.Client // plain producer and admin; partitions chosen by key
	parts int32
}

// Open opens the progress store of the destination cluster that opts reach,
// creating Topic if it does not exist. Close releases it.
func Open(ctx context.Context, opts []kgo.Opt) (*Store, error) {
	cl, err := kgo.NewClient(append(append([]kgo.Opt{}, opts...),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		// franz-go answers metadata requests from its cache for
		// MetadataMinAge: a topic just created must show up sooner than
		// ensureTopic gives up (about a second).
		kgo.MetadataMinAge(250*time.Millisecond))...)
	if err != nil {
		return nil, err
	}
	parts, err := ensureTopic(ctx, kadm.NewClient(cl))
	if err != nil {
		cl.Close()
		return nil, err
	}
	return &Store{opts: opts, cl: cl, parts: parts}, nil
}

// Close releases the store's client. It can be called more than once.
func (s *Store) Close() {
	if s != nil && s.cl != nil {
		s.cl.Close()
	}
}

// PartitionOf is the Topic partition where the record with key belongs.
// Transactional writers (the sinks) produce there themselves.
func (s *Store) PartitionOf(key []byte) int32 { return partitionOf(key, s.parts) }

// Write writes progress records outside any transaction (a failback moving
// a leg's progress past the records it copied back).
func (s *Store) Write(ctx context.Context, recs ...*Record) error {
	out := make([]*kgo.Record, 0, len(recs))
	for _, r := range recs {
		key := Key(r.Leg, r.TP())
		out = append(out, &kgo.Record{Topic: Topic, Partition: s.PartitionOf(key), Key: key, Value: Encode(r)})
	}
	if len(out) == 0 {
		return nil
	}
	return s.cl.ProduceSync(ctx, out...).FirstErr()
}

func (s *Store) write(ctx context.Context, key, value []byte) error {
	return s.cl.ProduceSync(ctx, &kgo.Record{Topic: Topic, Partition: s.PartitionOf(key), Key: key, Value: value}).FirstErr()
}

// State is what Topic holds for some legs, as far as it has been read: the
// latest progress per partition, the latest fence, the offset maps and
// their live segments. A State is not safe for concurrent use.
type State struct {
	legs     map[string]bool // nil: every leg
	pos      map[int32]int64 // next Topic offset to read, per partition
	progress map[string]map[TP]*Record
	fences   map[string]*Fence
	epochs   map[string]uint64  // highest fence epoch read, lifted or not
	segments map[string]*Record // by key; tombstones delete

	// Unsettled lists the progress partitions Load read while a
	// transaction still held their last stable offset back after
	// loadSettle ("topic/partition: stable S < end E"): what was committed
	// there after it began is missing from the state.
	Unsettled []string

	built bool // maps and segs are up to date
	maps  map[string]*OffsetMap
	segs  map[string]map[TP][]SegRef
}

// Load reads the committed state of the given legs (all when none is
// given): the latest record per leg and partition. It reads with
// read_committed up to the last stable offset seen at the start, so a
// receiver calls it after its transactional producers have been
// initialised (which aborts any transaction a previous instance left
// open).
func (s *Store) Load(ctx context.Context, legs ...string) (*State, error) {
	st := &State{pos: map[int32]int64{}, progress: map[string]map[TP]*Record{}, fences: map[string]*Fence{},
		epochs: map[string]uint64{}, segments: map[string]*Record{}}
	if len(legs) > 0 {
		st.legs = map[string]bool{}
		for _, l := range legs {
			st.legs[l] = true
		}
	}
	// An open transaction holds back the last stable offset, and with it
	// whatever was committed after it began: the load would miss progress
	// committed since and the leg would write it again. Transactions end
	// in a second or so; one that outlasts loadSettle is left behind (see
	// State.Unsettled).
	held, err := kread.Settle(ctx, s.opts, []string{Topic}, loadSettle)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", Topic, err)
	}
	st.Unsettled = held
	if err := s.Refresh(ctx, st); err != nil {
		return nil, err
	}
	return st, nil
}

// loadSettle bounds how long Load waits for the transactions open on the
// progress topic to end.
const loadSettle = 15 * time.Second

// Refresh reads what was committed to Topic since st was last read, up to
// the last stable offset seen now. Reading resumes where it stopped: a
// failover's drain follows the mirror without reading the topic again.
func (s *Store) Refresh(ctx context.Context, st *State) error {
	var bad int
	err := kread.EachFrom(ctx, s.opts, []string{Topic}, map[string]map[int32]int64{Topic: st.pos}, func(r *kgo.Record) {
		st.pos[r.Partition] = max(st.pos[r.Partition], r.Offset+1)
		if !st.apply(r) {
			bad++
		}
	})
	st.built = false
	if err != nil {
		return fmt.Errorf("read %s: %w", Topic, err)
	}
	if bad > 0 {
		return fmt.Errorf("read %s: %d records are not meridian progress records (written by a newer version, or by something else?)", Topic, bad)
	}
	return nil
}

// apply adds one record of Topic; it reports false for a record it cannot
// decode.
func (st *State) apply(r *kgo.Record) bool {
	if r.Value == nil { // a tombstone: its segment's records are gone
		delete(st.segments, string(r.Key))
		return true
	}
	p, err := decode(r.Value)
	if err != nil {
		return false
	}
	if st.legs != nil && !st.legs[p.Leg] {
		return true
	}
	switch p.Kind {
	case KindFence:
		f, err := decodeFence(r.Value)
		if err != nil {
			return false
		}
		st.epochs[f.Leg] = max(st.epochs[f.Leg], f.Epoch)
		if f.Lifted {
			delete(st.fences, f.Leg)
		} else {
			st.fences[f.Leg] = f
		}
	case KindSegment:
		st.segments[string(r.Key)] = p
	case "":
		m := st.progress[p.Leg]
		if m == nil {
			m = map[TP]*Record{}
			st.progress[p.Leg] = m
		}
		m[p.TP()] = p
	default:
		return false
	}
	return true
}

// Progress is the leg's latest committed progress per source partition.
func (st *State) Progress(leg string) map[TP]*Record { return st.progress[leg] }

// Fence is the leg's fence, or nil if it is not fenced.
func (st *State) Fence(leg string) *Fence { return st.fences[leg] }

// LastEpoch is the epoch of the leg's latest fence record, lifted or not
// (0: none).
func (st *State) LastEpoch(leg string) uint64 { return st.epochs[leg] }

// OffsetMap is the leg's offset map as read (empty, never nil, when nothing
// is mirrored). A later Refresh builds a new one and leaves this one as it
// is, so a receiver may go on adding its own commits to it.
func (st *State) OffsetMap(leg string) *OffsetMap {
	st.build()
	if m := st.maps[leg]; m != nil {
		return m
	}
	m := NewOffsetMap(leg)
	st.maps[leg] = m
	return m
}

// Segments are the leg's live offset-map segments per source partition, in
// order.
func (st *State) Segments(leg string) map[TP][]SegRef {
	st.build()
	return st.segs[leg]
}

// build derives the offset maps from the live segments and each
// partition's latest tail.
func (st *State) build() {
	if st.built {
		return
	}
	st.built = true
	st.maps, st.segs = map[string]*OffsetMap{}, map[string]map[TP][]SegRef{}
	ranges := map[string]map[TP][]offRange{}
	add := func(p *Record) {
		if ranges[p.Leg] == nil {
			ranges[p.Leg] = map[TP][]offRange{}
			st.maps[p.Leg] = NewOffsetMap(p.Leg)
		}
		k := p.TP()
		ranges[p.Leg][k] = append(ranges[p.Leg][k], p.Ranges...)
		pm := st.maps[p.Leg].part(k, p.DestTopic)
		pm.next = max(pm.next, p.Next)
	}
	for _, p := range st.segments {
		add(p)
		if len(p.Ranges) == 0 {
			continue
		}
		if st.segs[p.Leg] == nil {
			st.segs[p.Leg] = map[TP][]SegRef{}
		}
		k := p.TP()
		last := p.Ranges[len(p.Ranges)-1]
		st.segs[p.Leg][k] = append(st.segs[p.Leg][k], SegRef{Seg: p.Seg, DstEnd: last[1] + last[2]})
	}
	for _, m := range st.progress {
		for _, p := range m {
			add(p)
		}
	}
	for leg, byTP := range ranges {
		for k, rs := range byTP {
			st.maps[leg].parts[k].ranges = buildRangeSet(rs)
		}
	}
	for _, byTP := range st.segs {
		for _, refs := range byTP {
			sort.Slice(refs, func(i, j int) bool { return refs[i].Seg < refs[j].Seg })
		}
	}
}

// LoadOffsetMap reads the leg's offset map from the destination cluster dst.
func LoadOffsetMap(ctx context.Context, dst []kgo.Opt, leg string) (*OffsetMap, error) {
	s, err := Open(ctx, dst)
	if err != nil {
		return nil, fmt.Errorf("offset map of %s: %w", leg, err)
	}
	defer s.Close()
	st, err := s.Load(ctx, leg)
	if err != nil {
		return nil, fmt.Errorf("offset map of %s: %w", leg, err)
	}
	return st.OffsetMap(leg), nil
}

func isExists(err error) bool { return errors.Is(err, kerr.TopicAlreadyExists) }

// StateOf is the state of one leg whose progress is kept outside Kafka (a
// destination that is not a Kafka cluster keeps it itself): its latest
// record per source partition, no fences, no segments.
func StateOf(leg string, recs map[TP]*Record) *State {
	return &State{progress: map[string]map[TP]*Record{leg: recs}}
}
