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
// alphabet is the characters Kafka allows in topic names, so a pair of
// sets is searched breadth first over at most 65 letters per step; the
// search gives up (undecided) past a state budget rather than run long.
//
// Patterns match as regexp.MatchString does (anywhere in the name unless
// anchored), like routing.Leg.Match.
package topicset

import (
	"fmt"
	"regexp/syntax"
	"slices"
	"strconv"
	"strings"
	"unicode"
)

// Alphabet is the characters Kafka allows in topic names.
const Alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"

// MaxLen is the longest topic name Kafka accepts.
const MaxLen = 249

// Budget is how many states a search may visit before it gives up.
const Budget = 200_000

// Set is the destination names of one route's topics.
type Set struct {
	prefix, suffix   string
	include, exclude []*syntax.Prog
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

func (st *state) key(b *strings.Builder) {
	b.WriteString(strconv.Itoa(st.pre))
	for _, set := range [][][]uint32{st.inc, st.exc} {
		for _, pcs := range set {
			b.WriteByte('|')
			for _, pc := range pcs {
				b.WriteString(strconv.FormatUint(uint64(pc), 36))
				b.WriteByte(',')
			}
		}
		b.WriteByte('/')
	}
	fmt.Fprintf(b, "%x:%d:%v", st.suf, st.prev, st.nonEmpty)
}

// closure follows the empty transitions of prog from pcs in the context
// flags and returns every position reached.
func closure(prog *syntax.Prog, pcs []uint32, flags syntax.EmptyOp) []uint32 {
	seen := map[uint32]bool{}
	var out []uint32
	stack := slices.Clone(pcs)
	for len(stack) > 0 {
		pc := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[pc] {
			continue
		}
		seen[pc] = true
		out = append(out, pc)
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
	return out
}

// step is what prog reaches from pcs on r, after prev.
func step(prog *syntax.Prog, pcs []uint32, prev, r rune) []uint32 {
	var next []uint32
	for _, pc := range closure(prog, pcs, syntax.EmptyOpContext(prev, r)) {
		in := &prog.Inst[pc]
		switch in.Op {
		case syntax.InstRune, syntax.InstRune1, syntax.InstRuneAny, syntax.InstRuneAnyNotNL:
			if in.MatchRune(r) && !slices.Contains(next, in.Out) {
				next = append(next, in.Out)
			}
		}
	}
	slices.Sort(next)
	return next
}

func matches(prog *syntax.Prog, pcs []uint32, prev rune) bool {
	for _, pc := range closure(prog, pcs, syntax.EmptyOpContext(prev, -1)) {
		if prog.Inst[pc].Op == syntax.InstMatch {
			return true
		}
	}
	return false
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
	n := state{pre: st.pre, prev: class(rune(c)), nonEmpty: true,
		inc: make([][]uint32, len(st.inc)), exc: make([][]uint32, len(st.exc))}
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
	live := n.suf != 0
	for i, p := range s.include {
		n.inc[i] = step(p, st.inc[i], st.prev, rune(c))
		live = live || len(n.inc[i]) > 0
	}
	if !live {
		return state{dead: true}
	}
	for i, p := range s.exclude {
		n.exc[i] = step(p, st.exc[i], st.prev, rune(c))
	}
	return n
}

// ErrUndecided is returned when a search ran out of its Budget.
var ErrUndecided = fmt.Errorf("too complex to decide within %d states", Budget)

// Common returns the shortest name in both a and b (ok false: none), or
// ErrUndecided.
func Common(a, b *Set) (name string, ok bool, err error) {
	type node struct {
		sa, sb state
		name   string
	}
	var kb strings.Builder
	key := func(n *node) string {
		kb.Reset()
		n.sa.key(&kb)
		kb.WriteByte('#')
		n.sb.key(&kb)
		return kb.String()
	}
	first := &node{sa: a.start(), sb: b.start()}
	seen := map[string]bool{key(first): true}
	queue := []*node{first}
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		if a.accepts(&n.sa) && b.accepts(&n.sb) {
			return n.name, true, nil
		}
		if len(n.name) >= MaxLen {
			continue // Kafka has no longer names
		}
		for i := range len(Alphabet) {
			c := Alphabet[i]
			m := &node{sa: a.next(n.sa, c), sb: b.next(n.sb, c)}
			if m.sa.dead || m.sb.dead {
				continue
			}
			k := key(m)
			if seen[k] {
				continue
			}
			if len(seen) >= Budget {
				return "", false, ErrUndecided
			}
			seen[k] = true
			m.name = n.name + string(c)
			queue = append(queue, m)
		}
	}
	return "", false, nil
}

// Shortest returns the shortest name of s (ok false: s is empty), or
// ErrUndecided.
func (s *Set) Shortest() (name string, ok bool, err error) {
	return Common(s, s)
}

// Longer returns a name of s longer than n characters and at most MaxLen
// (ok false: there is none), or ErrUndecided.
func (s *Set) Longer(n int) (name string, ok bool, err error) {
	type node struct {
		st   state
		name string
	}
	var kb strings.Builder
	key := func(st *state, depth int) string {
		kb.Reset()
		st.key(&kb)
		fmt.Fprintf(&kb, "@%d", min(depth, n+1))
		return kb.String()
	}
	first := &node{st: s.start()}
	seen := map[string]bool{key(&first.st, 0): true}
	queue := []*node{first}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		if len(cur.name) > n && s.accepts(&cur.st) {
			return cur.name, true, nil
		}
		if len(cur.name) >= MaxLen {
			continue
		}
		for i := range len(Alphabet) {
			m := &node{st: s.next(cur.st, Alphabet[i]), name: cur.name + Alphabet[i:i+1]}
			if m.st.dead {
				continue
			}
			k := key(&m.st, len(m.name))
			if seen[k] {
				continue
			}
			if len(seen) >= Budget {
				return "", false, ErrUndecided
			}
			seen[k] = true
			queue = append(queue, m)
		}
	}
	return "", false, nil
}
