// Package origin is the provenance of a mirrored record: the header
// meridian.origin that the sending gateway adds to (or extends on) every
// record it sends in record mode, and the rule that keeps a record from
// being written into a cluster it has already been written to. It does no
// I/O and does not allocate except for the value it returns.
//
// # Encoding
//
// The value is short text: the clusters the record has been written to, in
// order, as "region/cluster" references separated by commas, the first
// being the cluster where it was produced:
//
//	hq/kafka,dr/kafka
//
// A value is valid when it holds 1 to MaxHops references, is at most
// MaxLen bytes, each reference is two names (lowercase letters, digits,
// '.', '_', '-'; the names a topology file accepts) joined by one '/', and
// no reference appears twice. Anything else is malformed. A later version
// of the encoding would start with a character no name may start with.
//
// # The rule (Next)
//
// The sending gateway of a leg from cluster S to cluster D, for each
// record read at S:
//
//   - no header: the record was produced at S; it goes with "S,D".
//   - a valid header naming D: the record has been at D, sending it would
//     be a loop; it is dropped before the link (Loop).
//   - a valid header with MaxHops references (and D not among them): it
//     is dropped too (Loop): a path that long is a cycle of renames or
//     copies this rule did not see.
//   - a valid header: S is appended unless present (a record copied to S
//     by something else than Meridian, headers kept), then D.
//   - a malformed header (an existing producer's own header of that name,
//     a corrupted one): the record is taken as produced at S, the value
//     is replaced by "S,D", and it is counted (Malformed). It never stops
//     the leg.
//
// A record carries at most one meridian.origin header; of several, the
// first counts and the others are dropped.
package origin

import "bytes"

// Header is the record header that carries a record's provenance.
const Header = "meridian.origin"

// Limits of a valid value.
const (
	MaxHops = 16
	MaxLen  = 1024
)

// Verdict is what Next decided for a record.
type Verdict uint8

const (
	// Local: no header, the record was produced at the source cluster.
	Local Verdict = iota
	// Extended: a valid header, extended with the destination.
	Extended
	// Malformed: a header that is not valid, replaced as for Local.
	Malformed
	// Loop: the destination is on the record's path (or the path is at
	// MaxHops): the record must not be sent.
	Loop
)

func (v Verdict) String() string {
	switch v {
	case Local:
		return "local"
	case Extended:
		return "extended"
	case Malformed:
		return "malformed"
	case Loop:
		return "loop"
	}
	return "unknown"
}

// Valid reports whether v is a valid value (see the package doc).
func Valid(v []byte) bool {
	_, ok := count(v)
	return ok
}

// count returns the references in v, checking v is valid.
func count(v []byte) (int, bool) {
	if len(v) == 0 || len(v) > MaxLen {
		return 0, false
	}
	n := 0
	for rest := v; ; {
		ref, tail, more := cut(rest)
		if !validRef(ref) {
			return 0, false
		}
		n++
		if n > MaxHops {
			return 0, false
		}
		// No reference twice: at most MaxHops of at most MaxLen bytes,
		// compared in place.
		for prev := v[:len(v)-len(rest)]; len(prev) > 0; {
			p, t, _ := cut(prev)
			if bytes.Equal(p, ref) {
				return 0, false
			}
			prev = t
		}
		if !more {
			return n, true
		}
		rest = tail
	}
}

// cut splits v at its first comma.
func cut(v []byte) (ref, rest []byte, more bool) {
	if i := bytes.IndexByte(v, ','); i >= 0 {
		return v[:i], v[i+1:], true
	}
	return v, nil, false
}

// validRef reports whether ref is "name/name".
func validRef(ref []byte) bool {
	slash := bytes.IndexByte(ref, '/')
	return slash > 0 && validName(ref[:slash]) && validName(ref[slash+1:])
}

func validName(b []byte) bool {
	if len(b) == 0 || len(b) > 63 {
		return false
	}
	for i, c := range b {
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case c == '.' || c == '_' || c == '-':
			if i == 0 {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// Contains reports whether the valid value v names cluster ref.
func Contains(v []byte, ref string) bool {
	for rest := v; ; {
		r, tail, more := cut(rest)
		if string(r) == ref {
			return true
		}
		if !more {
			return false
		}
		rest = tail
	}
}

// Path returns the references of a valid value, origin first (nil when
// v is not valid). It allocates: for tests and tools, not the data path.
func Path(v []byte) []string {
	if !Valid(v) {
		return nil
	}
	var out []string
	for rest := v; ; {
		r, tail, more := cut(rest)
		out = append(out, string(r))
		if !more {
			return out
		}
		rest = tail
	}
}

// Next applies the rule of the package doc to a record read at cluster
// src, to be sent to cluster dst: v is its meridian.origin value (present
// false: it has none). Unless the verdict is Loop, the new value is
// appended to buf and returned (out shares buf's array). src and dst must
// be valid, different references.
func Next(buf, v []byte, present bool, src, dst string) (out []byte, verdict Verdict) {
	verdict = Local
	if present {
		n, ok := count(v)
		switch {
		case !ok:
			verdict = Malformed
		case Contains(v, dst) || n >= MaxHops:
			return nil, Loop
		default:
			start := len(buf)
			buf = append(buf, v...)
			if !Contains(v, src) {
				if n+1 >= MaxHops {
					return nil, Loop
				}
				buf = append(buf, ',')
				buf = append(buf, src...)
			}
			buf = append(buf, ',')
			buf = append(buf, dst...)
			if len(buf)-start > MaxLen {
				return nil, Loop
			}
			return buf[start:], Extended
		}
	}
	start := len(buf)
	buf = append(buf, src...)
	buf = append(buf, ',')
	buf = append(buf, dst...)
	return buf[start:], verdict
}
