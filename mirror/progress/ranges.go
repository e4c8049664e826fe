package progress

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
)

// offRange is one run of an offset map: source offsets r[0]..r[0]+r[2]-1 were
// written to destination offsets r[1]..r[1]+r[2]-1.
type offRange = [3]int64

// Ranges is a list of offset ranges, sorted by source offset and not
// overlapping. On the wire (JSON in ProgressTopic) it is packed: base64 of
// varint deltas from the end of the previous range, about four bytes per
// range, since every destination transaction starts a range (its commit
// marker takes a destination offset) and a busy partition commits several
// per second.
type Ranges []offRange

// appendPacked appends rs as varints: (src − previous end), (dst − previous
// end), n.
func appendPacked(b []byte, rs []offRange) []byte {
	var ps, pd int64
	for _, r := range rs {
		b = binary.AppendVarint(b, r[0]-ps)
		b = binary.AppendVarint(b, r[1]-pd)
		b = binary.AppendUvarint(b, uint64(r[2]))
		ps, pd = r[0]+r[2], r[1]+r[2]
	}
	return b
}

var errPacked = errors.New("malformed packed ranges")

// unpack decodes what appendPacked wrote, appending to rs.
func unpack(rs []offRange, b []byte) ([]offRange, error) {
	var ps, pd int64
	for len(b) > 0 {
		ds, n1 := binary.Varint(b)
		if n1 <= 0 {
			return rs, errPacked
		}
		dd, n2 := binary.Varint(b[n1:])
		if n2 <= 0 {
			return rs, errPacked
		}
		n, n3 := binary.Uvarint(b[n1+n2:])
		if n3 <= 0 || n == 0 || n > 1<<62 {
			return rs, errPacked
		}
		b = b[n1+n2+n3:]
		r := offRange{ps + ds, pd + dd, int64(n)}
		if r[0] < 0 || r[1] < 0 || r[0] > 1<<62 || r[1] > 1<<62 {
			return rs, errPacked
		}
		rs = append(rs, r)
		ps, pd = r[0]+r[2], r[1]+r[2]
	}
	return rs, nil
}

func (r Ranges) MarshalJSON() ([]byte, error) {
	return json.Marshal(base64.StdEncoding.EncodeToString(appendPacked(nil, r)))
}

func (r *Ranges) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("ranges: %w", err)
	}
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return fmt.Errorf("ranges: %w", err)
	}
	rs, err := unpack(nil, raw)
	if err != nil {
		return fmt.Errorf("ranges: %w", err)
	}
	*r = rs
	return nil
}

// rangeBlockLen is how many ranges a sealed block of a rangeSet packs.
const rangeBlockLen = 128

// rangeSet is the in-memory offset map of one partition: sealed blocks of
// packed ranges with their bounds, and an open block of unpacked ones. A
// lookup binary-searches the blocks and decodes one. It costs about five
// bytes per range instead of 24.
type rangeSet struct {
	blocks []rangeBlock
	open   []offRange // sorted, after every block
	n      int        // ranges in all
}

type rangeBlock struct {
	first, last offRange
	n           int
	packed      []byte
}

func (s *rangeSet) len() int { return s.n }

// last returns the last range.
func (s *rangeSet) last() (offRange, bool) {
	if len(s.open) > 0 {
		return s.open[len(s.open)-1], true
	}
	if len(s.blocks) > 0 {
		return s.blocks[len(s.blocks)-1].last, true
	}
	return offRange{}, false
}

// end is the source offset after the last range (0 if empty).
func (s *rangeSet) end() int64 {
	if l, ok := s.last(); ok {
		return l[0] + l[2]
	}
	return 0
}

// add appends the ranges after the set's end, in order; those before it
// are already present (a progress record repeats the ranges since the last
// sealed segment) and are skipped.
func (s *rangeSet) add(rs []offRange) {
	for _, r := range rs {
		if r[0] >= s.end() {
			s.push(r)
		}
	}
}

// buildRangeSet builds a set from ranges in any order, some of them seen
// twice (a segment and the progress record it was sealed from, read from
// different partitions of the progress topic). It sorts rs.
func buildRangeSet(rs []offRange) *rangeSet {
	sort.Slice(rs, func(i, j int) bool { return rs[i][0] < rs[j][0] })
	s := &rangeSet{}
	s.add(rs)
	return s
}

func (s *rangeSet) push(r offRange) {
	s.open = append(s.open, r)
	s.n++
	if len(s.open) == rangeBlockLen {
		s.blocks = append(s.blocks, rangeBlock{first: s.open[0], last: s.open[len(s.open)-1], n: len(s.open),
			packed: appendPacked(nil, s.open)})
		s.open = s.open[:0]
	}
}

// all appends every range to out.
func (s *rangeSet) all(out []offRange) []offRange {
	for _, b := range s.blocks {
		out = b.unpack(out)
	}
	return append(out, s.open...)
}

func (b *rangeBlock) unpack(out []offRange) []offRange {
	out, err := unpack(out, b.packed)
	if err != nil {
		panic("mirror: corrupt in-memory range block") // we packed it
	}
	return out
}

// search returns the first range whose end, by key (0: source, 1:
// destination), is after off.
func (s *rangeSet) search(key int, off int64) (offRange, bool) {
	i := sort.Search(len(s.blocks), func(i int) bool {
		l := s.blocks[i].last
		return l[key]+l[2] > off
	})
	var rs []offRange
	if i < len(s.blocks) {
		var buf [rangeBlockLen]offRange
		rs = s.blocks[i].unpack(buf[:0])
	} else {
		rs = s.open
	}
	j := sort.Search(len(rs), func(j int) bool { return rs[j][key]+rs[j][2] > off })
	if j < len(rs) {
		return rs[j], true
	}
	return offRange{}, false
}

// pruneBelowDest drops whole blocks whose records all lie before the
// destination offset logStart (deleted by retention); it returns how many
// ranges went.
func (s *rangeSet) pruneBelowDest(logStart int64) int {
	i := 0
	dropped := 0
	for i < len(s.blocks) && s.blocks[i].last[1]+s.blocks[i].last[2] <= logStart {
		dropped += s.blocks[i].n
		i++
	}
	if i > 0 {
		s.blocks = append(s.blocks[:0], s.blocks[i:]...)
		s.n -= dropped
	}
	return dropped
}

// memBytes estimates the set's memory.
func (s *rangeSet) memBytes() int {
	n := cap(s.open) * 24
	for _, b := range s.blocks {
		n += 64 + cap(b.packed)
	}
	return n
}
