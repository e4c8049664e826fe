// Package redact keeps secret values out of output. A Set holds the values
// known to be secret (for a gateway: every value that came from ${ENV}
// expansion in its topology file, see config.File.Secrets) and replaces
// them with [redacted] in strings, in writers (the CLI's stdout and stderr,
// which carry its logs) and in HTTP responses (the admin API's /status and
// /metrics).
//
// Values shorter than MinLen bytes are not replaced: a secret that short
// cannot be told apart from ordinary text, and replacing "1" everywhere
// would make every output unreadable. Typed secrets (config.Secret) are
// redacted whatever their length, by their type.
package redact

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
)

// Marker replaces every secret value.
const Marker = "[redacted]"

// MinLen is the shortest value a Set replaces.
const MinLen = 4

// Set is a set of secret values, safe for concurrent use. The zero value
// is an empty set; a nil *Set redacts nothing.
type Set struct {
	mu     sync.RWMutex
	values map[string]bool
	r      *strings.Replacer // nil until a value is added
}

// New returns a set holding values.
func New(values ...string) *Set {
	s := new(Set)
	s.Add(values...)
	return s
}

// Add adds values to the set. Each is also added as it appears inside a
// JSON string and a URL query, so that encoded copies are caught too.
func (s *Set) Add(values ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.values == nil {
		s.values = make(map[string]bool)
	}
	added := false
	for _, v := range values {
		if len(v) < MinLen {
			continue
		}
		forms := []string{v, url.QueryEscape(v)}
		if b, err := json.Marshal(v); err == nil {
			forms = append(forms, string(b[1:len(b)-1]))
		}
		for _, f := range forms {
			if !s.values[f] {
				s.values[f] = true
				added = true
			}
		}
	}
	if !added {
		return
	}
	// Longest first, so that a secret containing another is replaced whole.
	all := make([]string, 0, len(s.values))
	for v := range s.values {
		all = append(all, v)
	}
	slices.SortFunc(all, func(a, b string) int {
		if len(a) != len(b) {
			return len(b) - len(a)
		}
		return strings.Compare(a, b)
	})
	pairs := make([]string, 0, 2*len(all))
	for _, v := range all {
		pairs = append(pairs, v, Marker)
	}
	s.r = strings.NewReplacer(pairs...)
}

// Len is the number of values held (counting encoded forms).
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.values)
}

// String returns str with every secret value replaced by Marker.
func (s *Set) String(str string) string {
	if s == nil {
		return str
	}
	s.mu.RLock()
	r := s.r
	s.mu.RUnlock()
	if r == nil {
		return str
	}
	return r.Replace(str)
}

// Writer returns a writer that redacts each Write to w. A secret split
// across two Writes is not caught: give it whole lines or records (slog
// handlers write one record per call, fmt.Fprintf one string). Values added
// to the set later are redacted from then on.
func (s *Set) Writer(w io.Writer) io.Writer { return &writer{s: s, w: w} }

type writer struct {
	s *Set
	w io.Writer
}

// Unwrap returns the writer w writes to (a terminal test looks through).
func (w *writer) Unwrap() io.Writer { return w.w }

func (w *writer) Write(p []byte) (int, error) {
	if w.s.Len() == 0 {
		return w.w.Write(p)
	}
	out := w.s.String(string(p))
	if _, err := io.WriteString(w.w, out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Handler wraps h so that everything it writes to the response body is
// redacted. A Content-Length set by h is dropped, since redaction changes
// the length.
func (s *Set) Handler(h http.Handler) http.Handler {
	if s == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(&responseWriter{ResponseWriter: w, s: s}, r)
	})
}

type responseWriter struct {
	http.ResponseWriter
	s           *Set
	wroteHeader bool
}

func (w *responseWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.wroteHeader = true
		w.Header().Del("Content-Length")
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if _, err := io.WriteString(w.ResponseWriter, w.s.String(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
