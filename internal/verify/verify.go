// Package verify compares a mirror with its source by reading both back: it
// counts records lost, duplicated, reordered and altered. It trusts no
// counters of the mirror itself.
package verify

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"sort"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/internal/kread"
	"github.com/meridian-gw/meridian/routing/origin"
)

// Report is the outcome of a comparison.
type Report struct {
	Produced   int64 `json:"produced"`   // committed source records (those Filtered included)
	Mirrored   int64 `json:"mirrored"`   // distinct source records found at the destination
	Lost       int64 `json:"lost"`       // source records missing at the destination
	Duplicated int64 `json:"duplicated"` // extra copies at the destination
	Reordered  int64 `json:"reordered"`  // destination records out of source order within their partition
	Unexpected int64 `json:"unexpected"` // destination records matching no source record (altered key, value, headers or timestamp)
	Filtered   int64 `json:"filtered"`   // source records a route filter keeps back (CompareFiltered), not expected at the destination
	Partitions int   `json:"partitions"`
	// First problems found, for error messages.
	Samples []string `json:"samples,omitempty"`
}

// OK reports whether the mirror is exact.
func (r *Report) OK() bool {
	return r.Lost == 0 && r.Duplicated == 0 && r.Reordered == 0 && r.Unexpected == 0
}

func (r *Report) String() string {
	return fmt.Sprintf("produced=%d mirrored=%d filtered=%d lost=%d duplicated=%d reordered=%d unexpected=%d partitions=%d",
		r.Produced, r.Mirrored, r.Filtered, r.Lost, r.Duplicated, r.Reordered, r.Unexpected, r.Partitions)
}

type key struct {
	topic string
	part  int32
}

// Fingerprint hashes everything a mirror must keep: key (null distinct from
// empty), value, headers in order, and timestamp. The provenance header
// meridian.origin (package routing/origin), which a mirror adds or extends
// by design, is left out: tests check it on its own.
func Fingerprint(r *kgo.Record) uint64 {
	h := fnv.New64a()
	var b [8]byte
	wr := func(p []byte) {
		if p == nil {
			binary.LittleEndian.PutUint64(b[:], ^uint64(0))
		} else {
			binary.LittleEndian.PutUint64(b[:], uint64(len(p)))
		}
		h.Write(b[:])
		h.Write(p)
	}
	wr(r.Key)
	wr(r.Value)
	n := 0
	for _, hd := range r.Headers {
		if hd.Key != origin.Header {
			n++
		}
	}
	binary.LittleEndian.PutUint64(b[:], uint64(n))
	h.Write(b[:])
	for _, hd := range r.Headers {
		if hd.Key == origin.Header {
			continue
		}
		wr([]byte(hd.Key))
		wr(hd.Value)
	}
	binary.LittleEndian.PutUint64(b[:], uint64(r.Timestamp.UnixMilli()))
	h.Write(b[:])
	return h.Sum64()
}

// Compare reads the source topics and their mirrors (rename maps a source
// topic to its destination topic) and compares them partition by partition.
func Compare(ctx context.Context, src, dst []kgo.Opt, topics []string, rename func(string) string) (*Report, error) {
	return CompareFiltered(ctx, src, dst, topics, rename, nil)
}

// CompareFiltered is Compare for a route with a filter: keep says whether a
// source record is sent (nil: every record). Records it keeps back are
// counted as Filtered (and as Produced), and are not expected at the
// destination.
func CompareFiltered(ctx context.Context, src, dst []kgo.Opt, topics []string, rename func(string) string, keep func(*kgo.Record) bool) (*Report, error) {
	sfp := map[key][]uint64{}
	var filtered int64
	if err := kread.Each(ctx, src, topics, func(r *kgo.Record) {
		if keep != nil && !keep(r) {
			filtered++
			return
		}
		k := key{r.Topic, r.Partition}
		sfp[k] = append(sfp[k], Fingerprint(r))
	}); err != nil {
		return nil, fmt.Errorf("read source: %w", err)
	}
	dtopics := make([]string, len(topics))
	back := map[string]string{}
	for i, t := range topics {
		dtopics[i] = rename(t)
		back[dtopics[i]] = t
	}
	dfp := map[key][]uint64{}
	if err := kread.Each(ctx, dst, dtopics, func(r *kgo.Record) {
		k := key{back[r.Topic], r.Partition}
		dfp[k] = append(dfp[k], Fingerprint(r))
	}); err != nil {
		return nil, fmt.Errorf("read destination: %w", err)
	}
	rep := &Report{Filtered: filtered}
	keys := map[key]bool{}
	for k := range sfp {
		keys[k] = true
	}
	for k := range dfp {
		keys[k] = true
	}
	sorted := make([]key, 0, len(keys))
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Slice(sorted, func(i, j int) bool {
		if sorted[i].topic != sorted[j].topic {
			return sorted[i].topic < sorted[j].topic
		}
		return sorted[i].part < sorted[j].part
	})
	rep.Partitions = len(sorted)
	for _, k := range sorted {
		comparePartition(rep, k, sfp[k], dfp[k])
	}
	rep.Produced += filtered
	return rep, nil
}

func (r *Report) sample(format string, args ...any) {
	if len(r.Samples) < 10 {
		r.Samples = append(r.Samples, fmt.Sprintf(format, args...))
	}
}

// comparePartition matches destination records to source positions. Equal
// fingerprints (identical records) are matched in order of occurrence.
func comparePartition(rep *Report, k key, s, d []uint64) {
	rep.Produced += int64(len(s))
	pos := map[uint64][]int{} // fingerprint → source indexes, in order
	for i, f := range s {
		pos[f] = append(pos[f], i)
	}
	seen := make([]bool, len(s))
	next := map[uint64]int{}
	last := -1
	for j, f := range d {
		idx := pos[f]
		n := next[f]
		if len(idx) == 0 {
			rep.Unexpected++
			rep.sample("%s/%d: destination record %d matches no source record", k.topic, k.part, j)
			continue
		}
		if n >= len(idx) {
			rep.Duplicated++
			rep.sample("%s/%d: destination record %d duplicates source record %d", k.topic, k.part, j, idx[len(idx)-1])
			continue
		}
		i := idx[n]
		next[f] = n + 1
		seen[i] = true
		rep.Mirrored++
		if i < last {
			rep.Reordered++
			rep.sample("%s/%d: source record %d arrived after source record %d", k.topic, k.part, i, last)
		} else {
			last = i
		}
	}
	for i, ok := range seen {
		if !ok {
			rep.Lost++
			if rep.Lost <= 3 {
				rep.sample("%s/%d: source record %d is missing", k.topic, k.part, i)
			}
		}
	}
}
