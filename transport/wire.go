package transport

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
)

// MaxFrameBytes is the protocol's hard cap on a frame body: no encoder
// produces a larger one and no decoder accepts one (Limits.MaxFrameBytes can
// only lower it).
const MaxFrameBytes = 64 << 20

// Defaults for Limits and Welcome.
const (
	DefaultMaxBatchBytes = 16 << 20 // uncompressed record block of one batch
	DefaultMaxRecords    = 1 << 20  // records in one batch
	DefaultMaxHeaders    = 1 << 12  // headers on one record
	DefaultWindow        = 64 << 20 // credit window a receiver grants when it does not choose one
)

// ErrMalformed is wrapped by every decoding error: a frame that is truncated,
// inconsistent, of an unknown type, or over a limit. A session that reads one
// ends with ErrCodeProtocol.
var ErrMalformed = errors.New("malformed frame")

// Limits protect a receiver from broken or hostile peers: a violation is a
// decoding error wrapping ErrMalformed, found before any large allocation.
// Zero fields take the defaults.
type Limits struct {
	// MaxFrameBytes caps a frame body as read from the wire (after
	// compression). Zero or anything above MaxFrameBytes means MaxFrameBytes.
	MaxFrameBytes int
	// MaxBatchBytes caps a batch's uncompressed record block, checked against
	// the declared length before decompressing. Zero: DefaultMaxBatchBytes.
	MaxBatchBytes int
	// MaxRecords caps the records of one batch. Zero: DefaultMaxRecords.
	MaxRecords int
	// MaxHeaders caps the headers of one record. Zero: DefaultMaxHeaders.
	MaxHeaders int
}

// WithDefaults returns l with zero (or out-of-range) fields replaced by the
// defaults.
func (l Limits) WithDefaults() Limits {
	if l.MaxFrameBytes <= 0 || l.MaxFrameBytes > MaxFrameBytes {
		l.MaxFrameBytes = MaxFrameBytes
	}
	if l.MaxBatchBytes <= 0 {
		l.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if l.MaxRecords <= 0 {
		l.MaxRecords = DefaultMaxRecords
	}
	if l.MaxHeaders <= 0 {
		l.MaxHeaders = DefaultMaxHeaders
	}
	return l
}

// String names a frame type; unknown values print as "frame(0xNN)".
func (t FrameType) String() string {
	switch t {
	case FrameHello:
		return "hello"
	case FrameWelcome:
		return "welcome"
	case FrameResume:
		return "resume"
	case FrameBatch:
		return "batch"
	case FrameAck:
		return "ack"
	case FrameCredit:
		return "credit"
	case FrameTopic:
		return "topic"
	case FrameTopicReady:
		return "topic-ready"
	case FramePing:
		return "ping"
	case FramePong:
		return "pong"
	case FrameError:
		return "error"
	case FrameGoaway:
		return "goaway"
	case FrameGroups:
		return "groups"
	case FrameFenced:
		return "fenced"
	case FrameDict:
		return "dict"
	case FrameDictAck:
		return "dict-ack"
	case FrameClaim:
		return "claim"
	}
	return "frame(0x" + strconv.FormatUint(uint64(t), 16) + ")"
}

// Since returns the protocol version that introduced frame type t, or 0
// for a type this build does not know. A session of a version below
// t.Since() never carries t: a Decoder set to that version (SetVersion)
// refuses it, and CheckVersion refuses to send it.
func (t FrameType) Since() uint16 {
	switch {
	case t >= FrameHello && t <= FrameFenced:
		return 1
	case t == FrameDict || t == FrameDictAck:
		return VersionDicts
	case t == FrameClaim:
		return VersionShare
	}
	return 0
}

// CheckSend is what every Conn.Send checks before sending f on a session
// of version v: a frame at all, the session not ended (sessionErr, its
// Err()), ctx alive, and the frame allowed at v (CheckVersion, wrapped:
// the peer would refuse it and end the session).
func CheckSend(ctx context.Context, f Frame, v uint16, sessionErr error) error {
	if f == nil {
		return errors.New("send: nil frame")
	}
	if sessionErr != nil {
		return sessionErr
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := CheckVersion(f, v); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	return nil
}

// CheckVersion returns an error if f cannot travel on a session of
// protocol version v: its frame type is of a later version, or it is a
// Batch carrying Kafka record batches and v is below VersionKafkaBatches.
func CheckVersion(f Frame, v uint16) error {
	t := f.frameType()
	if since := t.Since(); since == 0 || since > v {
		return fmt.Errorf("%s frame needs protocol version %d; the session speaks version %d", t, since, v)
	}
	if b, ok := f.(*Batch); ok && b.Kafka != nil && v < VersionKafkaBatches {
		return fmt.Errorf("batch of Kafka record batches needs protocol version %d; the session speaks version %d", VersionKafkaBatches, v)
	}
	return nil
}

// TypeOf returns the wire type of a frame.
func TypeOf(f Frame) FrameType { return f.frameType() }

// Append helpers. Strings are a uvarint length and the bytes; nullable byte
// slices are a varint length (-1 for nil) and the bytes.

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func appendNullable(dst, b []byte) []byte {
	if b == nil {
		return append(dst, 0x01) // zigzag varint of -1
	}
	dst = binary.AppendVarint(dst, int64(len(b)))
	return append(dst, b...)
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func varintLen(v int64) int {
	ux := uint64(v) << 1
	if v < 0 {
		ux = ^ux
	}
	return uvarintLen(ux)
}

func stringLen(s string) int { return uvarintLen(uint64(len(s))) + len(s) }

func nullableLen(b []byte) int {
	if b == nil {
		return 1
	}
	return varintLen(int64(len(b))) + len(b)
}

// reader decodes a frame body. The first error sticks; later reads return zero
// values, so decoders check r.err once per loop iteration and at the end.
type reader struct {
	b   []byte
	off int
	err error
	in  *interner // nil: strings are not interned
	// budget is what lists may still allocate (count), in bytes.
	budget int
}

// interner returns one string per distinct short value, so that header keys,
// legs and topics repeated in every batch cost no allocation after the
// first. It is bounded: a peer cannot grow it without limit.
type interner struct{ m map[string]string }

const (
	internMaxEntries = 1024
	internMaxLen     = 128
)

func (in *interner) get(b []byte) string {
	if len(b) > internMaxLen {
		return string(b)
	}
	if s, ok := in.m[string(b)]; ok { // no allocation for the lookup
		return s
	}
	s := string(b)
	if in.m == nil {
		in.m = make(map[string]string)
	}
	if len(in.m) < internMaxEntries {
		in.m[s] = s
	}
	return s
}

func (r *reader) remaining() int { return len(r.b) - r.off }

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf(format, args...)
	}
}

func (r *reader) uvarint(field string) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b[r.off:])
	if n <= 0 {
		if n == 0 {
			r.fail("%s: truncated", field)
		} else {
			r.fail("%s: uvarint overflows 64 bits", field)
		}
		return 0
	}
	r.off += n
	return v
}

func (r *reader) varint(field string) int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b[r.off:])
	if n <= 0 {
		if n == 0 {
			r.fail("%s: truncated", field)
		} else {
			r.fail("%s: varint overflows 64 bits", field)
		}
		return 0
	}
	r.off += n
	return v
}

func (r *reader) byte(field string) byte {
	if r.err != nil {
		return 0
	}
	if r.off >= len(r.b) {
		r.fail("%s: truncated", field)
		return 0
	}
	c := r.b[r.off]
	r.off++
	return c
}

func (r *reader) uint16(field string) uint16 {
	v := r.uvarint(field)
	if v > math.MaxUint16 {
		r.fail("%s: %d out of range", field, v)
		return 0
	}
	return uint16(v)
}

func (r *reader) uint32(field string) uint32 {
	v := r.uvarint(field)
	if v > math.MaxUint32 {
		r.fail("%s: %d out of range", field, v)
		return 0
	}
	return uint32(v)
}

func (r *reader) int32(field string) int32 {
	v := r.varint(field)
	if v < math.MinInt32 || v > math.MaxInt32 {
		r.fail("%s: %d out of range", field, v)
		return 0
	}
	return int32(v)
}

// count reads a list length and checks that at least minSize bytes per
// element remain, so that a forged count cannot trigger a huge allocation.
// elemSize bytes per element, the list's size in memory, are also charged
// against the reader's budget, and a list that does not fit is an error.
func (r *reader) count(field string, minSize, elemSize int) int {
	v := r.uvarint(field)
	if r.err != nil {
		return 0
	}
	if v > uint64(r.remaining()/minSize) {
		r.fail("%s: count %d exceeds what the remaining %d bytes can hold", field, v, r.remaining())
		return 0
	}
	if v*uint64(elemSize) > uint64(max(r.budget, 0)) {
		r.fail("%s: %d elements of %d bytes exceed the %d bytes left of the batch limit", field, v, elemSize, r.budget)
		return 0
	}
	r.budget -= int(v) * elemSize
	return int(v)
}

func (r *reader) bytesN(field string, n uint64) []byte {
	if r.err != nil {
		return nil
	}
	if n > uint64(r.remaining()) {
		r.fail("%s: length %d exceeds the remaining %d bytes", field, n, r.remaining())
		return nil
	}
	b := r.b[r.off : r.off+int(n) : r.off+int(n)]
	r.off += int(n)
	return b
}

func (r *reader) string(field string) string {
	n := r.uvarint(field)
	b := r.bytesN(field, n)
	if r.in != nil {
		return r.in.get(b)
	}
	return string(b)
}

// nullable reads a nullable byte slice that aliases the body: nil for length
// -1, a non-nil empty slice for length 0.
func (r *reader) nullable(field string) []byte {
	n := r.varint(field)
	if r.err != nil {
		return nil
	}
	switch {
	case n == -1:
		return nil
	case n < -1:
		r.fail("%s: invalid length %d", field, n)
		return nil
	}
	return r.bytesN(field, uint64(n))
}

// nullableCopy is nullable with the bytes copied out of the body.
func (r *reader) nullableCopy(field string) []byte {
	b := r.nullable(field)
	if b == nil {
		return nil
	}
	return append(make([]byte, 0, len(b)), b...)
}

func (r *reader) end(allowTrailing bool) {
	if r.err == nil && !allowTrailing && r.off != len(r.b) {
		r.fail("%d trailing bytes", len(r.b)-r.off)
	}
}
