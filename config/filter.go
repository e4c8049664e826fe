package config

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/meridian-gw/meridian/routing/filter"
)

// exprPathRE matches the settings that hold a filter expression, whose
// problems are placed inside the expression (exprSources).
var exprPathRE = regexp.MustCompile(`^routes\[\d+\]\.filter$`)

// exprSources keeps, for each filter expression in the file, its scalar
// node and the file's lines, so that a problem at a line and column of
// the expression can be placed at the line and column of the file.
type exprSources struct {
	size  int // of the file
	lines [][]byte
	nodes map[string]*yaml.Node // path → the scalar holding the expression
}

// fileSize is the length of the file the expressions are in (0 for none).
func (s *exprSources) fileSize() int {
	if s == nil {
		return 0
	}
	return s.size
}

// keepExpr records the node of an expression setting.
func (d *decoder) keepExpr(path string, n *yaml.Node) {
	if !exprPathRE.MatchString(path) {
		return
	}
	if d.exprs.nodes == nil {
		d.exprs.nodes = make(map[string]*yaml.Node)
		d.exprs.lines = bytes.Split(d.data, []byte("\n"))
	}
	d.exprs.nodes[path] = n
}

// at returns where character col (1-based) of line line (1-based) of the
// expression at path is written in the file; ok is false when it is not
// known (a File built in code, an expression from ${ENV}).
func (s *exprSources) at(path string, line, col int) (p pos, ok bool) {
	if s == nil {
		return pos{}, false
	}
	n := s.nodes[path]
	if n == nil || n.Kind != yaml.ScalarNode {
		return pos{}, false
	}
	// The character offset of (line, col) in the value.
	off := 0
	for i, l := range strings.Split(n.Value, "\n") {
		if i+1 == line {
			off += min(col-1, utf8.RuneCountInString(l))
			break
		}
		off += utf8.RuneCountInString(l) + 1
	}
	ps := scalarPositions(s.lines, n, off+1)
	if off < len(ps) {
		return ps[off], true
	}
	return nodePos(n), true
}

// scalarPositions returns the file position of each of the first want
// characters of scalar n's value, following YAML's quoting, escapes,
// folding and block indentation; fewer when the text runs out first.
func scalarPositions(lines [][]byte, n *yaml.Node, want int) []pos {
	var out []pos
	emit := func(l, c int) bool { // 0-based line index, 0-based character index
		out = append(out, pos{l + 1, c + 1})
		return len(out) >= want
	}
	runes := func(l int) []rune {
		if l < 0 || l >= len(lines) {
			return nil
		}
		return []rune(strings.TrimRight(string(lines[l]), "\r"))
	}
	switch {
	case n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0:
		// Content starts on the line after the indicator, indented as its
		// first non-blank line; each line break is one character (folding
		// turns it into a space; blank lines are approximated).
		indent := -1
		for l := n.Line; l < len(lines); l++ {
			rs := runes(l)
			blank := strings.TrimSpace(string(rs)) == ""
			if !blank && indent < 0 {
				indent = leading(rs)
			}
			if indent >= 0 && !blank && leading(rs) < indent {
				break // the block ended
			}
			for c := max(indent, 0); c < len(rs); c++ {
				if emit(l, c) {
					return out
				}
			}
			if emit(l, len(rs)) {
				return out
			}
		}
		return out
	}
	quote := rune(0)
	switch {
	case n.Style&yaml.DoubleQuotedStyle != 0:
		quote = '"'
	case n.Style&yaml.SingleQuotedStyle != 0:
		quote = '\''
	}
	l, c := n.Line-1, n.Column-1
	if quote != 0 {
		c++
	}
	for l < len(lines) {
		rs := runes(l)
		// Trailing blanks before a line break are not part of the value.
		end := len(rs)
		for end > c && (rs[end-1] == ' ' || rs[end-1] == '\t') {
			end--
		}
		for c < end {
			r := rs[c]
			switch {
			case quote != 0 && r == quote && !(quote == '\'' && c+1 < len(rs) && rs[c+1] == '\''):
				return out // the closing quote
			case quote == '\'' && r == '\'':
				if emit(l, c) {
					return out
				}
				c += 2
				continue
			case quote == '"' && r == '\\':
				if c+1 >= end {
					c = end // an escaped line break: no character
					goto nextLine
				}
				if emit(l, c) {
					return out
				}
				c += 2 + map[rune]int{'x': 2, 'u': 4, 'U': 8}[rs[c+1]]
				continue
			}
			if emit(l, c) {
				return out
			}
			c++
		}
		// A line break folds into a space, or into one line break per
		// blank line after it.
		{
			blanks := 0
			for strings.TrimSpace(string(runes(l+1+blanks))) == "" && l+1+blanks < len(lines) {
				blanks++
			}
			for range max(blanks, 1) {
				if emit(l, end) {
					return out
				}
			}
			l += blanks
		}
	nextLine:
		l++
		c = leading(runes(l))
	}
	return out
}

// leading counts a line's leading blanks.
func leading(rs []rune) int {
	n := 0
	for n < len(rs) && (rs[n] == ' ' || rs[n] == '\t') {
		n++
	}
	return n
}

// filterExpr checks the filter of the route at rp: it must compile and
// type-check, and each problem is placed where the file writes it.
func (v *validator) filterExpr(rp string, r Route) {
	p := rp + ".filter"
	if r.Filter == "" && (v.exprs == nil || v.exprs.nodes[p] == nil) {
		return // not set, or null ("filter:" or "filter: ~")
	}
	_, err := filter.Compile(r.Filter)
	if err == nil {
		return
	}
	var es filter.Errors
	if !errors.As(err, &es) {
		v.errorf(p, "%v", err)
		return
	}
	for _, e := range es {
		at, ok := v.exprs.at(p, e.Line, e.Col)
		if !ok {
			at = v.at(p)
		}
		v.errorAt(p, at, "%s", e.Reason)
	}
}

// passthroughWarnings warns, for each filtered route, about the
// passthrough links its legs may travel: a filtered leg decodes its
// records, so passthrough does not apply to it.
func passthroughWarnings(f *File, warn func(path, format string, args ...any)) {
	region := func(ref string) string { r, _, _ := strings.Cut(ref, "/"); return r }
	for i, r := range f.Routes {
		if r.Filter == "" {
			continue
		}
		from := region(r.From)
		var names []string
		for _, l := range f.Links {
			if !l.Passthrough || len(l.Between) != 2 {
				continue
			}
			a, b := region(l.Between[0]), region(l.Between[1])
			for _, to := range r.To {
				if t := region(to); a == from && b == t || b == from && a == t {
					names = append(names, fmt.Sprintf("%q", l.Name))
					break
				}
			}
		}
		if len(names) > 0 {
			warn(fmt.Sprintf("routes[%d].filter", i), "passthrough (link %s) does not apply to this route: a filtered leg decodes its source batches to evaluate the filter and sends records", strings.Join(names, ", "))
		}
	}
}
