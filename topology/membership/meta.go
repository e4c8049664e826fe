package membership

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// MetaMax is memberlist's cap on a node's metadata (memberlist.MetaMaxSize).
const MetaMax = 512

// metaFormat is the first byte of encoded metadata. Later formats only
// append fields, so a decoder reads the fields it knows and ignores the
// rest.
const metaFormat = 1

// nameMax is the longest region or gateway name the decoder accepts: the
// topology file's limit (63) with room to spare.
const nameMax = 128

// Caps are the optional features a gateway speaks, one bit each.
type Caps uint64

const (
	CapQUICGossip  Caps = 1 << iota // gossips over its QUIC link sessions
	CapStripes                      // stripes sessions over several connections
	CapPassthrough                  // forwards Kafka record batches byte for byte
	CapDialOut                      // reachable only over sessions it dials
)

var capNames = []string{"quic-gossip", "stripes", "passthrough", "dial-out"}

func (c Caps) String() string {
	var parts []string
	for i, n := range capNames {
		if c&(1<<i) != 0 {
			parts = append(parts, n)
			c &^= 1 << i
		}
	}
	if c != 0 {
		parts = append(parts, fmt.Sprintf("0x%x", uint64(c)))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ",")
}

// Meta is what a member tells the others about itself, in memberlist's
// node metadata.
type Meta struct {
	Region  string
	Gateway string
	// Incarnation is the gateway process's generation (its start time in
	// Unix milliseconds): a restarted gateway has a higher one, whatever
	// memberlist's own incarnation number says.
	Incarnation uint64
	Caps        Caps
	// ProtoMin and ProtoMax are the link protocol versions it speaks
	// (transport.VersionMin/Max).
	ProtoMin, ProtoMax uint16
	// Leaving is set by the first phase of a two-phase leave: the gateway
	// is about to leave and drain, so peers mark it left, not dead.
	Leaving bool
}

const flagLeaving = 1 << 0

// ErrMeta is wrapped by every DecodeMeta error.
var ErrMeta = errors.New("malformed member metadata")

// ErrMetaTooBig is returned (wrapped) by Encode when the metadata would
// not fit in MetaMax bytes.
var ErrMetaTooBig = errors.New("member metadata too big")

// Append appends m's encoding to dst:
//
//	format   1 byte (1)
//	flags    1 byte (bit 0: leaving)
//	region   uvarint length, bytes
//	gateway  uvarint length, bytes
//	incarnation, caps, proto min, proto max: uvarints
func (m *Meta) Append(dst []byte) []byte {
	var flags byte
	if m.Leaving {
		flags |= flagLeaving
	}
	dst = append(dst, metaFormat, flags)
	dst = binary.AppendUvarint(dst, uint64(len(m.Region)))
	dst = append(dst, m.Region...)
	dst = binary.AppendUvarint(dst, uint64(len(m.Gateway)))
	dst = append(dst, m.Gateway...)
	dst = binary.AppendUvarint(dst, m.Incarnation)
	dst = binary.AppendUvarint(dst, uint64(m.Caps))
	dst = binary.AppendUvarint(dst, uint64(m.ProtoMin))
	dst = binary.AppendUvarint(dst, uint64(m.ProtoMax))
	return dst
}

// Encode returns m's encoding, or an error naming the gateway when it
// would not fit in MetaMax bytes.
func (m *Meta) Encode() ([]byte, error) {
	b := m.Append(make([]byte, 0, 64))
	if len(b) > MetaMax {
		return nil, fmt.Errorf("gateway %s: %w: %d bytes, memberlist allows %d", m.Gateway, ErrMetaTooBig, len(b), MetaMax)
	}
	return b, nil
}

// DecodeMeta decodes b. It never allocates more than the two names' bytes,
// and refuses input over MetaMax bytes, names over 128 bytes, a format
// below 1 and a protocol range with its minimum above its maximum. Bytes
// after the known fields are ignored (a later format's).
func DecodeMeta(b []byte) (Meta, error) {
	var m Meta
	if len(b) > MetaMax {
		return m, fmt.Errorf("%w: %d bytes, more than %d", ErrMeta, len(b), MetaMax)
	}
	if len(b) < 2 {
		return m, fmt.Errorf("%w: %d bytes, too short", ErrMeta, len(b))
	}
	if b[0] < metaFormat {
		return m, fmt.Errorf("%w: format %d", ErrMeta, b[0])
	}
	m.Leaving = b[1]&flagLeaving != 0
	r := metaReader{b: b[2:]}
	m.Region = r.name("region")
	m.Gateway = r.name("gateway")
	m.Incarnation = r.uvarint("incarnation")
	m.Caps = Caps(r.uvarint("caps"))
	m.ProtoMin = r.uint16("protocol min")
	m.ProtoMax = r.uint16("protocol max")
	if r.err != nil {
		return Meta{}, r.err
	}
	if m.ProtoMin > m.ProtoMax {
		return Meta{}, fmt.Errorf("%w: protocol range %d-%d", ErrMeta, m.ProtoMin, m.ProtoMax)
	}
	return m, nil
}

// metaReader reads the fields of metadata and health reports; its
// errors wrap base (ErrMeta when nil).
type metaReader struct {
	b    []byte
	err  error
	base error
}

func (r *metaReader) fail(format string, args ...any) {
	base := r.base
	if base == nil {
		base = ErrMeta
	}
	r.err = fmt.Errorf("%w: "+format, append([]any{base}, args...)...)
}

func (r *metaReader) uvarint(what string) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("bad %s", what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *metaReader) uint16(what string) uint16 {
	v := r.uvarint(what)
	if v > 0xffff {
		r.fail("%s %d out of range", what, v)
	}
	return uint16(v)
}

func (r *metaReader) name(what string) string {
	n := r.uvarint(what + " length")
	if r.err != nil {
		return ""
	}
	switch {
	case n == 0:
		r.fail("empty %s", what)
		return ""
	case n > nameMax:
		r.fail("%s of %d bytes, more than %d", what, n, nameMax)
		return ""
	case n > uint64(len(r.b)):
		r.fail("%s of %d bytes, %d left", what, n, len(r.b))
		return ""
	}
	s := r.b[:n]
	r.b = r.b[n:]
	for _, c := range s {
		if c < 0x21 || c > 0x7e {
			r.fail("%s has byte 0x%02x", what, c)
			return ""
		}
	}
	return string(s)
}
