// Package topicset decides questions about the sets of topic names a
// route can write: the names its include patterns match and its exclude
// patterns do not, renamed by a template of the form prefix + {topic} +
// suffix. It answers whether two such sets share a name (with the
// shortest such name as a witness) and how short a name of a set can be,
// so that validation can reject two routes that would write the same
// destination topic, or a rename Kafka would refuse, before anything runs.
//
// A set is explored as a deterministic automaton built on the fly from
// the patterns' RE2 programs (regexp/syntax): the state is the set of
// program positions of each pattern (a subset construction, which also
// gives the complement an exclude needs), where the prefix and suffix are
// in the name, and what the previous character was (for \b). The
// alphabet is the characters Kafka allows in topic names, grouped into
// the classes the patterns tell apart, so a pair of sets is searched
// breadth first over a few letters per step; a search gives up
// (undecided) past a state budget rather than run long.
//
// Patterns match as regexp.MatchString does (anywhere in the name unless
// anchored), like routing.Leg.Match.
package topicset

import (
	"encoding/binary"
	"errors"
	"fmt"
	"regexp/syntax"
	"slices"
	"strconv"
	"sync"
	"unicode"
)

// Alphabet is the characters Kafka allows in topic names.
const Alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"

// MaxLen is the longest topic name Kafka accepts.
const MaxLen = 249

// Budget is how many steps (a state and a letter tried from it) searches
// may take before they give up: each search takes its steps from it, so
// one Budget can bound every search of a file. A step allocates up to
// about a kilobyte, depending on the patterns.
type Budget struct{ Steps int }

// Set is the destination names of one route's topics.
type Set struct {
	prefix, suffix   string
	include, exclude []*syntax.Prog
	class            []uint8 // by Alphabet index (classes); nil until needed
}

// New returns the set of names prefix+t+suffix for every non-empty topic
// t that matches an include pattern and no exclude pattern, restricted to
// Alphabet. The suffix may be at most 63 bytes.
func New(include, exclude []string, prefix, suffix string) (*Set, error) {
	if len(suffix) > 63 {
		return nil, fmt.Errorf("rename suffix %q is longer than 63 bytes", suffix)
	}
	s := &Set{prefix: prefix, suffix: suffix}
	for _, set := range []struct {
		pats []string
		dst  *[]*syntax.Prog
	}{{include, &s.include}, {exclude, &s.exclude}} {
		for _, p := range set.pats {
			re, err := syntax.Parse(p, syntax.Perl)
			if err != nil {
				return nil, err
			}
			// Anywhere in the name, as MatchString: .* around it, and the
			// whole name must be consumed.
			any := &syntax.Regexp{Op: syntax.OpStar, Flags: syntax.Perl | syntax.DotNL,
				Sub: []*syntax.Regexp{{Op: syntax.OpAnyChar, Flags: syntax.Perl | syntax.DotNL}}}
			whole := &syntax.Regexp{Op: syntax.OpConcat, Flags: syntax.Perl, Sub: []*syntax.Regexp{any, re.Simplify(), any}}
			prog, err := syntax.Compile(whole)
			if err != nil {
				return nil, err
			}
			*set.dst = append(*set.dst, prog)
		}
	}
	return s, nil
}

// Renamed returns the set of prefix+name+suffix for the names of s (which
// must have no prefix or suffix itself), sharing its programs.
func (s *Set) Renamed(prefix, suffix string) (*Set, error) {
	if len(suffix) > 63 {
		return nil, fmt.Errorf("rename suffix %q is longer than 63 bytes", suffix)
	}
	return &Set{prefix: s.prefix + prefix, suffix: suffix + s.suffix, include: s.include, exclude: s.exclude}, nil // classes differ with the literals
}

// state is where a Set's automaton is after some characters of a name.
type state struct {
	pre      int        // characters of prefix read; len(prefix): in the topic
	inc      [][]uint32 // per include program: positions before closure
	exc      [][]uint32 // per exclude program
	suf      uint64     // bit j: the last j characters read are suffix[:j], after a topic that matched
	prev     rune       // previous topic character (-1 at the topic's start); a class representative
	nonEmpty bool       // the topic has a character
	dead     bool
}

func (s *Set) start() state {
	st := state{prev: -1, inc: make([][]uint32, len(s.include)), exc: make([][]uint32, len(s.exclude))}
	for i, p := range s.include {
		st.inc[i] = []uint32{uint32(p.Start)}
	}
	for i, p := range s.exclude {
		st.exc[i] = []uint32{uint32(p.Start)}
	}
	return st
}

// key appends what identifies the state.
func (st *state) key(b []byte) []byte {
	b = binary.AppendUvarint(b, uint64(st.pre))
	for _, set := range [][][]uint32{st.inc, st.exc} {
		for _, pcs := range set {
			b = binary.AppendUvarint(b, uint64(len(pcs)))
			for _, pc := range pcs {
				b = binary.AppendUvarint(b, uint64(pc))
			}
		}
	}
	b = binary.AppendUvarint(b, st.suf)
	b = append(b, byte(st.prev+2)) // -1, '.' or 'a'
	if st.nonEmpty {
		b = append(b, '+')
	}
	return b
}

// scratch is reused space for closures of one program.
type scratch struct {
	seen  []uint32 // generation at which each position was last seen
	gen   uint32
	stack []uint32
	out   []uint32
}

var scratches = sync.Pool{New: func() any { return new(scratch) }}

// closure follows the empty transitions of prog from pcs in the context
// flags and calls f with every position reached.
func closure(prog *syntax.Prog, pcs []uint32, flags syntax.EmptyOp, f func(pc uint32) bool) bool {
	sc := scratches.Get().(*scratch)
	defer scratches.Put(sc)
	if len(sc.seen) < len(prog.Inst) {
		sc.seen = make([]uint32, len(prog.Inst))
		sc.gen = 0
	}
	sc.gen++
	if sc.gen == 0 {
		clear(sc.seen)
		sc.gen = 1
	}
	stack := append(sc.stack[:0], pcs...)
	defer func() { sc.stack = stack[:0] }()
	for len(stack) > 0 {
		pc := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if sc.seen[pc] == sc.gen {
			continue
		}
		sc.seen[pc] = sc.gen
		if f(pc) {
			return true
		}
		in := &prog.Inst[pc]
		switch in.Op {
		case syntax.InstAlt, syntax.InstAltMatch:
			stack = append(stack, in.Out, in.Arg)
		case syntax.InstCapture, syntax.InstNop:
			stack = append(stack, in.Out)
		case syntax.InstEmptyWidth:
			if syntax.EmptyOp(in.Arg)&^flags == 0 {
				stack = append(stack, in.Out)
			}
		}
	}
	return false
}

// step is what prog reaches from pcs on r, after prev.
// The positions are appended to buf, sorted.
func step(prog *syntax.Prog, pcs []uint32, prev, r rune, buf []uint32) []uint32 {
	start := len(buf)
	closure(prog, pcs, syntax.EmptyOpContext(prev, r), func(pc uint32) bool {
		in := &prog.Inst[pc]
		switch in.Op {
		case syntax.InstRune, syntax.InstRune1, syntax.InstRuneAny, syntax.InstRuneAnyNotNL:
			if in.MatchRune(r) && !slices.Contains(buf[start:], in.Out) {
				buf = append(buf, in.Out)
			}
		}
		return false
	})
	slices.Sort(buf[start:])
	return buf
}

func matches(prog *syntax.Prog, pcs []uint32, prev rune) bool {
	return closure(prog, pcs, syntax.EmptyOpContext(prev, -1), func(pc uint32) bool {
		return prog.Inst[pc].Op == syntax.InstMatch
	})
}

// topicAccepts reports whether the topic read so far is in the set.
func (s *Set) topicAccepts(st *state) bool {
	if st.pre < len(s.prefix) || !st.nonEmpty {
		return false
	}
	in := false
	for i, p := range s.include {
		if matches(p, st.inc[i], st.prev) {
			in = true
			break
		}
	}
	if !in {
		return false
	}
	for i, p := range s.exclude {
		if matches(p, st.exc[i], st.prev) {
			return false
		}
	}
	return true
}

// accepts reports whether the name read so far is in the set.
func (s *Set) accepts(st *state) bool {
	if st.dead {
		return false
	}
	if s.suffix == "" {
		return s.topicAccepts(st)
	}
	return st.suf&(1<<len(s.suffix)) != 0
}

func class(r rune) rune {
	if r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) {
		return 'a'
	}
	return '.'
}

// next is the state after reading c.
func (s *Set) next(st state, c byte) state {
	if st.dead {
		return st
	}
	if st.pre < len(s.prefix) {
		if s.prefix[st.pre] != c {
			return state{dead: true}
		}
		st.pre++
		return st
	}
	sets := make([][]uint32, len(st.inc)+len(st.exc))
	n := state{pre: st.pre, prev: class(rune(c)), nonEmpty: true,
		inc: sets[:len(st.inc):len(st.inc)], exc: sets[len(st.inc):]}
	// The suffix: a guess that the topic ended before c, and earlier
	// guesses going on.
	if s.suffix != "" {
		var suf uint64
		if s.topicAccepts(&st) {
			suf = st.suf | 1
		} else {
			suf = st.suf
		}
		for j := range len(s.suffix) {
			if suf&(1<<j) != 0 && s.suffix[j] == c {
				n.suf |= 1 << (j + 1)
			}
		}
	}
	// One array holds every program's positions.
	var buf []uint32
	live := n.suf != 0
	ends := make([]int, 0, 8)
	for i, p := range s.include {
		buf = step(p, st.inc[i], st.prev, rune(c), buf)
		ends = append(ends, len(buf))
	}
	if !live && len(buf) == 0 {
		return state{dead: true}
	}
	for i, p := range s.exclude {
		buf = step(p, st.exc[i], st.prev, rune(c), buf)
		ends = append(ends, len(buf))
	}
	from := 0
	for i, end := range ends {
		sets[i] = buf[from:end:end]
		from = end
	}
	return n
}

// signature appends what tells character c apart for s: which rune
// instructions of its programs match it, whether it is a word character,
// and where it is in the prefix and suffix. Characters with the same
// signature lead every state to the same next state, so a search tries
// one of them.
func (s *Set) signature(b []byte, c byte) []byte {
	for _, progs := range [][]*syntax.Prog{s.include, s.exclude} {
		for _, p := range progs {
			for i := range p.Inst {
				in := &p.Inst[i]
				switch in.Op {
				case syntax.InstRune, syntax.InstRune1, syntax.InstRuneAny, syntax.InstRuneAnyNotNL:
					if in.MatchRune(rune(c)) {
						b = append(b, '1')
					} else {
						b = append(b, '0')
					}
				}
			}
		}
	}
	b = append(b, byte(class(rune(c))))
	for _, lit := range []string{s.prefix, s.suffix} {
		for i := range len(lit) {
			if lit[i] == c {
				b = strconv.AppendInt(b, int64(i), 10)
				b = append(b, ',')
			}
		}
		b = append(b, '/')
	}
	return b
}

// classes numbers the characters of Alphabet by signature, once per Set.
func (s *Set) classes() []uint8 {
	if s.class != nil {
		return s.class
	}
	s.class = make([]uint8, len(Alphabet))
	ids := map[string]uint8{}
	var sig []byte
	for i := range len(Alphabet) {
		sig = s.signature(sig[:0], Alphabet[i])
		id, ok := ids[string(sig)]
		if !ok {
			id = uint8(len(ids))
			ids[string(sig)] = id
		}
		s.class[i] = id
	}
	return s.class
}

// letters returns one character of Alphabet per class that sets tell
// apart (see signature).
func letters(sets ...*Set) []byte {
	seen := map[[2]uint8]bool{}
	var out []byte
	for i := range len(Alphabet) {
		var k [2]uint8
		for j, s := range sets[:min(len(sets), 2)] {
			k[j] = s.classes()[i]
		}
		if !seen[k] {
			seen[k] = true
			out = append(out, Alphabet[i])
		}
	}
	return out
}

// ErrUndecided is returned when a search ran out of its Budget.
var ErrUndecided = errors.New("too complex to decide within the search budget")

// take charges one step; false when the budget is spent.
func (b *Budget) take() bool {
	if b.Steps <= 0 {
		return false
	}
	b.Steps--
	return true
}

// Common returns the shortest name in both a and b (ok false: none), or
// ErrUndecided.
func Common(a, b *Set, budget *Budget) (name string, ok bool, err error) {
	type node struct {
		sa, sb state
		parent *node
		c      byte
		depth  int
	}
	nameOf := func(n *node) string {
		b := make([]byte, n.depth)
		for ; n.parent != nil; n = n.parent {
			b[n.depth-1] = n.c
		}
		return string(b)
	}
	var kb []byte
	key := func(n *node) []byte {
		kb = n.sa.key(kb[:0])
		kb = append(kb, '#')
		kb = n.sb.key(kb)
		return kb
	}
	first := &node{sa: a.start(), sb: b.start()}
	seen := map[string]bool{string(key(first)): true}
	queue := []*node{first}
	alpha := letters(a, b)
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		if a.accepts(&n.sa) && b.accepts(&n.sb) {
			return nameOf(n), true, nil
		}
		if n.depth >= MaxLen {
			continue // Kafka has no longer names
		}
		for _, c := range alpha {
			if !budget.take() {
				return "", false, ErrUndecided
			}
			m := &node{sa: a.next(n.sa, c), sb: b.next(n.sb, c)}
			if m.sa.dead || m.sb.dead {
				continue
			}
			k := key(m)
			if seen[string(k)] {
				continue
			}
			seen[string(k)] = true
			m.parent, m.c, m.depth = n, c, n.depth+1
			queue = append(queue, m)
		}
	}
	return "", false, nil
}

// Shortest returns the shortest name of s (ok false: s is empty), or
// ErrUndecided.
func (s *Set) Shortest(budget *Budget) (name string, ok bool, err error) {
	type node struct {
		st     state
		parent *node
		c      byte
		depth  int
	}
	var kb []byte
	first := &node{st: s.start()}
	seen := map[string]bool{string(first.st.key(nil)): true}
	queue := []*node{first}
	alpha := letters(s)
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		if s.accepts(&n.st) {
			b := make([]byte, n.depth)
			for m := n; m.parent != nil; m = m.parent {
				b[m.depth-1] = m.c
			}
			return string(b), true, nil
		}
		if n.depth >= MaxLen {
			continue
		}
		for _, c := range alpha {
			if !budget.take() {
				return "", false, ErrUndecided
			}
			st := s.next(n.st, c)
			if st.dead {
				continue
			}
			kb = st.key(kb[:0])
			if seen[string(kb)] {
				continue
			}
			seen[string(kb)] = true
			queue = append(queue, &node{st: st, parent: n, c: c, depth: n.depth + 1})
		}
	}
	return "", false, nil
}

// Longest returns the length of the longest name of s, or bounded false
// when its names have no bound (a loop such as .* on the way to a
// match), or ErrUndecided. An empty s has length -1. Unlike the searches,
// it does not stop at Kafka's MaxLen: the caller compares.
func (s *Set) Longest(budget *Budget) (n int, bounded bool, err error) {
	// The whole state graph, then the longest path through the states
	// that lead to a match.
	var kb []byte
	var states []state
	ids := map[string]int{}
	var edges [][]int
	add := func(st state) int {
		kb = st.key(kb[:0])
		if id, ok := ids[string(kb)]; ok {
			return id
		}
		ids[string(kb)] = len(states)
		states = append(states, st)
		edges = append(edges, nil)
		return len(states) - 1
	}
	add(s.start())
	alpha := letters(s)
	for i := 0; i < len(states); i++ {
		for _, c := range alpha {
			if !budget.take() {
				return 0, false, ErrUndecided
			}
			nx := s.next(states[i], c)
			if nx.dead {
				continue
			}
			j := add(nx)
			if !slices.Contains(edges[i], j) {
				edges[i] = append(edges[i], j)
			}
		}
	}
	// useful: leads to an accepting state.
	rev := make([][]int, len(states))
	for i, es := range edges {
		for _, j := range es {
			rev[j] = append(rev[j], i)
		}
	}
	useful := make([]bool, len(states))
	var stack []int
	for i := range states {
		if s.accepts(&states[i]) {
			useful[i] = true
			stack = append(stack, i)
		}
	}
	for len(stack) > 0 {
		j := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, i := range rev[j] {
			if !useful[i] {
				useful[i] = true
				stack = append(stack, i)
			}
		}
	}
	if !useful[0] {
		return -1, true, nil
	}
	// Longest path over useful states; a cycle among them is unbounded.
	const unseen, active, done = 0, 1, 2
	mark := make([]int, len(states))
	longest := make([]int, len(states))
	var visit func(i int) bool
	visit = func(i int) bool {
		mark[i] = active
		best := -1
		if s.accepts(&states[i]) {
			best = 0
		}
		for _, j := range edges[i] {
			if !useful[j] {
				continue
			}
			switch mark[j] {
			case active:
				return false
			case unseen:
				if !visit(j) {
					return false
				}
			}
			best = max(best, longest[j]+1)
		}
		longest[i], mark[i] = best, done
		return true
	}
	if !visit(0) {
		return 0, false, nil
	}
	return longest[0], true, nil
}
