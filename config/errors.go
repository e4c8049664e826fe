package config

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/meridian-gw/meridian/internal/redact"
)

// Error is one problem in a topology file.
type Error struct {
	File   string `json:"file"` // name given to Parse, or the path given to Load
	Line   int    `json:"line"` // 1-based
	Col    int    `json:"col"`  // 1-based
	Path   string `json:"path"` // e.g. "regions[0].gateways[1].listen"; "" for the whole file
	Reason string `json:"reason"`
}

// Error formats e as "FILE:LINE:COL: PATH: reason".
func (e *Error) Error() string {
	if e.Path == "" {
		return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Col, e.Reason)
	}
	return fmt.Sprintf("%s:%d:%d: %s: %s", e.File, e.Line, e.Col, e.Path, e.Reason)
}

// Errors is every problem found in one topology file, sorted by position.
// Parse and Load return it (never empty) when a file is not valid.
type Errors []*Error

// Error returns one line per problem.
func (es Errors) Error() string {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Unwrap lets errors.As find a single *Error (the first).
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// sorted returns es ordered by line and column. A node shared through YAML
// aliases can yield the same problem under several paths; only the first
// is kept. Problems at the same position keep the order they were found.
func (es Errors) sorted() Errors {
	slices.SortStableFunc(es, func(a, b *Error) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Col, b.Col))
	})
	return slices.CompactFunc(es, func(a, b *Error) bool {
		return a.Line == b.Line && a.Col == b.Col && a.Reason == b.Reason
	})
}

// ErrorAt returns a problem with the setting at path (as in Error.Path,
// e.g. "regions[0].gateways[1].tls.cert_file"), placed where the file
// writes that setting, or else where its nearest written parent is. Code
// that checks a File beyond this package (building gateways, say) reports
// through it, so its problems read like validation's. For a File not made
// by Parse or Load the file is "" and the position 1:1. Values from ${ENV}
// are redacted from the reason.
func (f *File) ErrorAt(path, format string, args ...any) *Error {
	e := &Error{Line: 1, Col: 1, Path: path, Reason: fmt.Sprintf(format, args...)}
	if f.src != nil {
		p := lookupPos(f.src.pos, path)
		e.File, e.Line, e.Col = f.src.name, p.line, p.col
		e.Reason = redact.New(f.src.secrets...).String(e.Reason)
	}
	return e
}

// Warnings are settings of a valid file that are accepted but have no
// effect yet or are risky (an unauthenticated admin API on all
// interfaces); each says why. Sorted by position; nil if none.
func (f *File) Warnings() Errors {
	if f.src == nil {
		return nil
	}
	return f.src.warnings
}

// Sort orders es by position (file, line, column), keeping the order of
// problems at the same position, and drops repeats.
func (es Errors) Sort() Errors {
	slices.SortStableFunc(es, func(a, b *Error) int {
		return cmp.Or(cmp.Compare(a.File, b.File), cmp.Compare(a.Line, b.Line), cmp.Compare(a.Col, b.Col))
	})
	return slices.CompactFunc(es, func(a, b *Error) bool { return *a == *b })
}

// lookupPos is where path is written, or its nearest written ancestor; 1:1
// when none is.
func lookupPos(m map[string]pos, path string) pos {
	for p := path; ; p = parent(p) {
		if ps, ok := m[p]; ok {
			return ps
		}
		if p == "" {
			return pos{1, 1}
		}
	}
}
