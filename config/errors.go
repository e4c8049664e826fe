package config

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
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
