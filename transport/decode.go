package transport

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"unsafe"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// Decoder reads frames from a stream. It holds the decompressor and a reusable
// body buffer; keep one per stream. A Decoder is not safe for concurrent use.
//
// Frames returned are owned by the caller and share no memory with the
// Decoder: a Batch's keys, values and header values alias one buffer
// allocated for that batch alone.
type Decoder struct {
	lim Limits
	// version is the session's protocol version (SetVersion); zero until
	// it is set, which decodes every frame this build knows.
	version uint16
	zdec    *zstd.Decoder // created on the first zstd batch
	// dicts holds the dictionaries the peer sent (nil: none), and the
	// session's decoder of them.
	dicts *Dicts
	body  []byte
	in    interner
}

// NewDecoder returns a Decoder that enforces lim (zero fields: defaults).
func NewDecoder(lim Limits) *Decoder {
	return &Decoder{lim: lim.WithDefaults()}
}

// Limits returns the limits the Decoder enforces, defaults filled in.
func (d *Decoder) Limits() Limits { return d.lim }

// SetVersion makes the Decoder decode frames of protocol version v, the
// version a session agreed on in its Welcome: a frame type, or a Batch
// codec bit, that v does not have (FrameType.Since, VersionKafkaBatches)
// is an error wrapping ErrMalformed, found before the body is decoded.
// Until SetVersion, a Decoder reads every frame of VersionMax, which is
// what a handshake needs (Hello, Welcome and Error are version 1). It
// returns an error, and changes nothing, if this build does not speak v.
func (d *Decoder) SetVersion(v uint16) error {
	if v < VersionMin || v > VersionMax {
		return fmt.Errorf("set decoder version: version %d is outside the %d-%d this build speaks", v, VersionMin, VersionMax)
	}
	d.version = v
	return nil
}

// Version is the protocol version the Decoder decodes: the one given to
// SetVersion, or VersionMax.
func (d *Decoder) Version() uint16 {
	if d.version == 0 {
		return VersionMax
	}
	return d.version
}

// SetDicts makes the Decoder decode zstd batches that name a dictionary
// with those of t (a session's receiving dictionaries, NewRecvDicts).
// Without it, such a batch is malformed.
func (d *Decoder) SetDicts(t *Dicts) { d.dicts = t }

// Close releases the decompressor. The Decoder must not be used afterwards.
func (d *Decoder) Close() {
	if d.zdec != nil {
		d.zdec.Close()
		d.zdec = nil
	}
	d.body = nil
}

// ReadFrame reads one frame. It returns io.EOF if r ends cleanly between
// frames, io.ErrUnexpectedEOF if it ends inside one, a read error as is, and
// an error wrapping ErrMalformed if the frame is invalid. A Batch has WireSize
// set.
func (d *Decoder) ReadFrame(r *bufio.Reader) (Frame, error) {
	return d.readFrame(r, false)
}

// MaxHandshakeBytes caps the body of a frame that ReadHandshake reads. A
// Hello naming a few thousand legs fits; a peer that has not been
// welcomed yet cannot make the receiver buffer more.
const MaxHandshakeBytes = 256 << 10

// ReadHandshake reads one frame of the handshake: a Hello, a Welcome or an
// Error, with a body of at most MaxHandshakeBytes. Any other frame type, or
// a longer body, is an error wrapping ErrMalformed, found before the body
// is read. Errors are otherwise those of ReadFrame.
func (d *Decoder) ReadHandshake(r *bufio.Reader) (Frame, error) {
	return d.readFrame(r, true)
}

func (d *Decoder) readFrame(r *bufio.Reader, handshake bool) (Frame, error) {
	tb, err := r.ReadByte()
	if err != nil {
		return nil, err
	}
	t := FrameType(tb)
	if t < FrameHello || t > FrameClaim {
		return nil, fmt.Errorf("%w: unknown frame type %s", ErrMalformed, t)
	}
	if handshake && t != FrameHello && t != FrameWelcome && t != FrameError {
		return nil, fmt.Errorf("%w: %s frame during the handshake (only hello, welcome and error)", ErrMalformed, t)
	}
	if v := d.Version(); t.Since() > v {
		return nil, fmt.Errorf("%w: %s frame needs protocol version %d; the session speaks version %d", ErrMalformed, t, t.Since(), v)
	}
	n, err := binary.ReadUvarint(r)
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %s: body length: %v", ErrMalformed, t, err)
	}
	if n > uint64(d.lim.MaxFrameBytes) {
		return nil, fmt.Errorf("%w: %s: body of %d bytes exceeds the limit of %d", ErrMalformed, t, n, d.lim.MaxFrameBytes)
	}
	if handshake && n > MaxHandshakeBytes {
		return nil, fmt.Errorf("%w: %s: body of %d bytes exceeds the handshake limit of %d", ErrMalformed, t, n, MaxHandshakeBytes)
	}
	body, err := d.readBody(r, int(n))
	if err != nil {
		return nil, err
	}
	f, err := d.decodeBody(t, body)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrMalformed, t, err)
	}
	if b, ok := f.(*Batch); ok {
		b.WireSize = 1 + uvarintLen(n) + int(n)
	}
	// Do not pin a huge body buffer after an unusually large frame.
	if cap(d.body) > 8<<20 {
		d.body = nil
	}
	return f, nil
}

// readBody reads n bytes into the reusable body buffer. A buffer larger than
// the current one grows only as bytes actually arrive, so a forged length
// costs the sender as much as the receiver.
func (d *Decoder) readBody(r io.Reader, n int) ([]byte, error) {
	if cap(d.body) >= n {
		b := d.body[:n]
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, unexpectedEOF(err)
		}
		return b, nil
	}
	b := d.body[:0]
	for len(b) < n {
		chunk := min(n-len(b), max(len(b), 64<<10))
		off := len(b)
		if cap(b)-off < chunk {
			nb := make([]byte, off, min(n, max(2*cap(b), off+chunk)))
			copy(nb, b)
			b = nb
		}
		b = b[:off+chunk]
		if _, err := io.ReadFull(r, b[off:]); err != nil {
			return nil, unexpectedEOF(err)
		}
	}
	d.body = b
	return b, nil
}

func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// decodeBody decodes the body of a frame of type t. Each frame type has
// its own function below; the switch only dispatches.
func (d *Decoder) decodeBody(t FrameType, body []byte) (Frame, error) {
	// Lists in control frames are charged their in-memory size against
	// the batch limit, besides needing a byte per element on the wire.
	r := &reader{b: body, in: &d.in, budget: d.lim.MaxBatchBytes}
	var f Frame
	allowTrailing := false
	switch t {
	case FrameHello:
		// Hello is read before a version is agreed: later versions may append
		// fields, which this version ignores.
		allowTrailing = true
		f = decodeHello(r)
	case FrameWelcome:
		f = decodeWelcome(r)
	case FrameResume:
		f = decodeResume(r)
	case FrameBatch:
		b, err := d.decodeBatch(r)
		if err != nil {
			return nil, err
		}
		f = b
	case FrameAck:
		f = decodeAck(r)
	case FrameCredit:
		f = &Credit{Window: r.varint("window")}
	case FrameTopic:
		f = decodeTopic(r)
	case FrameTopicReady:
		f = &TopicReady{Leg: r.string("leg"), Name: r.string("name"), Err: r.string("err")}
	case FramePing:
		f = &Ping{Nonce: r.uvarint("nonce"), SentAt: r.varint("sent_at")}
	case FramePong:
		f = &Pong{Nonce: r.uvarint("nonce"), SentAt: r.varint("sent_at")}
	case FrameError:
		f = &Error{Code: r.uint16("code"), Message: r.string("message")}
	case FrameGoaway:
		f = &Goaway{Reason: r.string("reason")}
	case FrameGroups:
		f = decodeGroups(r)
	case FrameFenced:
		f = &Fenced{Leg: r.string("leg"), Epoch: r.uvarint("epoch"), Reason: r.string("reason")}
	case FrameDict:
		f = decodeDict(r)
	case FrameDictAck:
		f = &DictAck{ID: r.uint32("id")}
	case FrameClaim:
		f = decodeClaim(r)
	default:
		return nil, fmt.Errorf("unknown frame type %s", t)
	}
	r.end(allowTrailing)
	if r.err != nil {
		return nil, r.err
	}
	return f, nil
}

// The decode functions of the frame bodies. Struct literals evaluate their
// fields in order, which is the wire order; the first error sticks in r.

func decodeHello(r *reader) *Hello {
	h := &Hello{}
	h.VersionMin = r.uint16("version_min")
	h.VersionMax = r.uint16("version_max")
	h.Gateway = r.string("gateway")
	h.Region = r.string("region")
	if n := r.count("legs", 1, sizeString); n > 0 {
		h.Legs = make([]string, n)
		for i := range h.Legs {
			h.Legs[i] = r.string("legs")
		}
	}
	if n := r.count("codecs", 1, 1); n > 0 {
		h.Codecs = make([]Codec, n)
		for i := range h.Codecs {
			h.Codecs[i] = Codec(r.byte("codecs"))
		}
	}
	if r.err == nil && h.VersionMax >= VersionDuplex && r.remaining() > 0 {
		// Version 4: the legs the dialer wants to receive and its window.
		// A Hello offering less carries none, whatever follows.
		if n := r.count("receive", 1, sizeString); n > 0 {
			h.Receive = make([]string, n)
			for i := range h.Receive {
				h.Receive[i] = r.string("receive")
			}
		}
		h.RecvWindow = r.varint("recv_window")
		h.RecvMaxBatchBytes = r.varint("recv_max_batch_bytes")
	}
	if r.err == nil && h.VersionMax >= VersionRelay && r.remaining() > 0 {
		// Version 5, after the version 4 fields: the gateway a relay
		// feeds the legs for, then the legs the dialer shares with its
		// region's gateways.
		h.Origin = r.string("origin")
		if r.err == nil && r.remaining() > 0 {
			if n := r.count("shared", 1, sizeString); n > 0 {
				h.Shared = make([]string, n)
				for i := range h.Shared {
					h.Shared[i] = r.string("shared")
				}
			}
		}
	}
	return h
}

func decodeWelcome(r *reader) *Welcome {
	w := &Welcome{}
	w.Version = r.uint16("version")
	w.Gateway = r.string("gateway")
	w.Region = r.string("region")
	w.Window = r.varint("window")
	w.MaxBatchBytes = r.varint("max_batch_bytes")
	if r.err == nil && w.Version >= VersionDuplex && r.remaining() > 0 {
		if n := r.count("send", 1, sizeString); n > 0 {
			w.Send = make([]string, n)
			for i := range w.Send {
				w.Send[i] = r.string("send")
			}
		}
	}
	return w
}

func decodeResume(r *reader) *Resume {
	m := &Resume{}
	m.Leg = r.string("leg")
	m.Gen = r.uvarint("gen")
	if n := r.count("positions", 3, int(unsafe.Sizeof(Position{}))); n > 0 {
		m.Positions = make([]Position, n)
		for i := range m.Positions {
			p := &m.Positions[i]
			p.Topic = r.string("positions.topic")
			p.Partition = r.int32("positions.partition")
			p.NextOffset = r.varint("positions.next_offset")
			if r.err != nil {
				break
			}
		}
	}
	return m
}

func decodeAck(r *reader) *Ack {
	a := &Ack{}
	if n := r.count("seqs", 1, 8); n > 0 {
		a.Seqs = make([]uint64, n)
		for i := range a.Seqs {
			if i == 0 {
				a.Seqs[0] = r.uvarint("seqs")
			} else {
				a.Seqs[i] = a.Seqs[i-1] + uint64(r.varint("seqs"))
			}
		}
	}
	return a
}

func decodeTopic(r *reader) *Topic {
	m := &Topic{}
	m.Leg = r.string("leg")
	m.Name = r.string("name")
	m.Partitions = r.int32("partitions")
	if n := r.count("configs", 2, mapEntryCost); n > 0 {
		m.Configs = make(map[string]string, min(n, 64))
		for range n {
			k := r.string("configs.key")
			v := r.string("configs.value")
			if r.err != nil {
				break
			}
			if _, dup := m.Configs[k]; dup {
				r.fail("configs: duplicate key %q", k)
				break
			}
			m.Configs[k] = v
		}
	}
	return m
}

func decodeGroups(r *reader) *Groups {
	m := &Groups{}
	m.Leg = r.string("leg")
	if n := r.count("offsets", 4, int(unsafe.Sizeof(GroupOffset{}))); n > 0 {
		m.Offsets = make([]GroupOffset, n)
		for i := range m.Offsets {
			o := &m.Offsets[i]
			o.Group = r.string("offsets.group")
			o.Topic = r.string("offsets.topic")
			o.Partition = r.int32("offsets.partition")
			o.Offset = r.varint("offsets.offset")
			if r.err != nil {
				break
			}
		}
	}
	return m
}

func decodeClaim(r *reader) *Claim {
	m := &Claim{}
	m.Leg = r.string("leg")
	m.Generation = r.int32("generation")
	m.Member = r.string("member")
	if n := r.count("topics", 2, int(unsafe.Sizeof(ClaimedTopic{}))); n > 0 {
		m.Topics = make([]ClaimedTopic, n)
		for i := range m.Topics {
			t := &m.Topics[i]
			t.Topic = r.string("topics.topic")
			if k := r.count("topics.partitions", 1, 4); k > 0 {
				t.Partitions = make([]int32, k)
				for j := range t.Partitions {
					t.Partitions[j] = r.int32("topics.partitions")
				}
			}
			if r.err != nil {
				break
			}
		}
	}
	return m
}

func decodeDict(r *reader) *Dict {
	m := &Dict{}
	m.ID = r.uint32("id")
	m.Leg = r.string("leg")
	m.Topic = r.string("topic")
	n := r.uvarint("data")
	if r.err == nil && n > MaxDictBytes {
		r.fail("data: %d bytes exceed the limit of %d", n, MaxDictBytes)
	}
	if b := r.bytesN("data", n); len(b) > 0 {
		m.Data = append([]byte(nil), b...)
	}
	return m
}

func (d *Decoder) decodeBatch(r *reader) (*Batch, error) {
	b := &Batch{}
	b.Leg = r.string("leg")
	b.Gen = r.uvarint("gen")
	b.Seq = r.uvarint("seq")
	b.Topic = r.string("topic")
	b.Partition = r.int32("partition")
	b.NextOffset = r.varint("next_offset")
	b.HighWatermark = r.varint("high_watermark")
	cb := r.byte("codec")
	codec, kafka := Codec(cb&^codecKafka), cb&codecKafka != 0
	rawLen := r.uvarint("raw_length")
	if r.err != nil {
		return nil, r.err
	}
	if v := d.Version(); kafka && v < VersionKafkaBatches {
		return nil, fmt.Errorf("%s/%d: codec byte 0x%02x: Kafka record batches (bit 0x%02x) need protocol version %d; the session speaks version %d",
			b.Topic, b.Partition, cb, codecKafka, VersionKafkaBatches, v)
	}
	if rawLen > uint64(d.lim.MaxBatchBytes) {
		return nil, fmt.Errorf("%s/%d: uncompressed record block of %d bytes exceeds the limit of %d", b.Topic, b.Partition, rawLen, d.lim.MaxBatchBytes)
	}
	payload := r.b[r.off:]
	r.off = len(r.b)
	blk, err := d.decompress(codec, payload, int(rawLen))
	if err != nil {
		return nil, fmt.Errorf("%s/%d: %w", b.Topic, b.Partition, err)
	}
	if kafka {
		n, _, err := walkKafka(blk, true)
		if err != nil {
			return nil, fmt.Errorf("%s/%d: %w", b.Topic, b.Partition, err)
		}
		if n > d.lim.MaxRecords {
			return nil, fmt.Errorf("%s/%d: %d records exceed the limit of %d", b.Topic, b.Partition, n, d.lim.MaxRecords)
		}
		if b.Kafka = blk; blk == nil {
			b.Kafka = []byte{}
		}
		return b, nil
	}
	if err := d.decodeRecords(b, blk); err != nil {
		return nil, fmt.Errorf("%s/%d: %w", b.Topic, b.Partition, err)
	}
	return b, nil
}

// decompress returns the record block in a fresh buffer of exactly rawLen
// bytes, or an error if the payload does not decompress to exactly that.
func (d *Decoder) decompress(c Codec, payload []byte, rawLen int) ([]byte, error) {
	switch c {
	case CodecNone:
		if len(payload) != rawLen {
			return nil, fmt.Errorf("codec none: payload is %d bytes, declared %d", len(payload), rawLen)
		}
		return append(make([]byte, 0, rawLen), payload...), nil
	case CodecS2:
		n, err := s2.DecodedLen(payload)
		if err != nil {
			return nil, fmt.Errorf("s2: %w", err)
		}
		if n != rawLen {
			return nil, fmt.Errorf("s2: block decodes to %d bytes, declared %d", n, rawLen)
		}
		out, err := s2.Decode(make([]byte, rawLen), payload)
		if err != nil {
			return nil, fmt.Errorf("s2: %w", err)
		}
		return out, nil
	case CodecZstd:
		var h zstd.Header
		if err := h.Decode(payload); err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		if h.HasFCS && h.FrameContentSize != uint64(rawLen) {
			return nil, fmt.Errorf("zstd: frame declares %d bytes, batch declares %d", h.FrameContentSize, rawLen)
		}
		z, err := d.zstdDecoder(h.DictionaryID)
		if err != nil {
			return nil, err
		}
		buf := make([]byte, 0, rawLen)
		out, err := z.DecodeAll(payload, buf)
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		if len(out) != rawLen {
			return nil, fmt.Errorf("zstd: payload decodes to %d bytes, declared %d", len(out), rawLen)
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown codec %s", c)
}

// zstdDecoder returns a decoder for zstd frames that name dictionary id (0:
// none). The dictionary decoder is the session's, held by its Dicts and
// shared by the Decoders of all its streams; it is rebuilt with all of
// them when dictionaries have arrived (at most MaxDicts per session).
func (d *Decoder) zstdDecoder(id uint32) (*zstd.Decoder, error) {
	opts := []zstd.DOption{
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxMemory(uint64(max(d.lim.MaxBatchBytes, 1))),
		zstd.WithDecoderMaxWindow(uint64(max(min(d.lim.MaxBatchBytes, 1<<30), zstd.MinWindowSize))),
		zstd.WithDecodeAllCapLimit(true),
	}
	if id == 0 {
		if d.zdec == nil {
			z, err := zstd.NewReader(nil, opts...)
			if err != nil {
				return nil, fmt.Errorf("new zstd decoder: %w", err)
			}
			d.zdec = z
		}
		return d.zdec, nil
	}
	if d.dicts == nil || d.dicts.get(id) == nil {
		return nil, fmt.Errorf("zstd: batch uses dictionary %d, which the peer never sent", id)
	}
	return d.dicts.decoder(opts)
}

// Minimum encoded sizes, used to bound counts by the bytes that remain.
const (
	minRecordSize = 5 // offset delta, timestamp delta, key, value, header count
	minHeaderSize = 2 // key length, value length
)

// In-memory sizes charged for decoded control-frame lists.
const (
	sizeString   = int(unsafe.Sizeof(""))
	mapEntryCost = 64 // a map[string]string entry, with its share of buckets
)

// MinRecordCost and MinHeaderCost are the least a decoder charges a
// record (without its headers) and a header against Limits.MaxBatchBytes,
// however few bytes they take on the wire: what a record costs in memory
// once decoded (a Record is 88 bytes, a Header 40) is then within three
// times the limit, however the block is made. RecordCost adds them up.
const (
	MinRecordCost = 32
	MinHeaderCost = 24
)

// RecordCost is what a decoder charges r against Limits.MaxBatchBytes: its
// encoded size (offset and timestamp as given, which a batch encodes as
// deltas no longer than that in practice), at least MinRecordCost, plus
// each header's encoded size, at least MinHeaderCost. A sender that cuts
// batches by it at the receiver's limit is never refused for their size.
func RecordCost(r *Record) int {
	n := max(varintLen(r.Offset)+varintLen(r.Timestamp)+nullableLen(r.Key)+nullableLen(r.Value)+
		uvarintLen(uint64(len(r.Headers))), MinRecordCost)
	for _, h := range r.Headers {
		n += max(stringLen(h.Key)+nullableLen(h.Value), MinHeaderCost)
	}
	return n
}

// decodeRecords decodes a record block in two passes. The first checks the
// block's structure and charges every record and header its cost
// (RecordCost) against the batch limit, allocating nothing; only then does
// the second allocate the record and header arrays, of exactly the sizes
// counted. Counts that the block declares never size an allocation before
// the bytes behind them have been seen.
func (d *Decoder) decodeRecords(b *Batch, blk []byte) error {
	r := &reader{b: blk, in: &d.in}
	n := r.uvarint("record_count")
	baseOff := r.varint("base_offset")
	baseTS := r.varint("base_timestamp")
	if r.err != nil {
		return r.err
	}
	if n > uint64(d.lim.MaxRecords) {
		return fmt.Errorf("%d records exceed the limit of %d", n, d.lim.MaxRecords)
	}
	if n > uint64(r.remaining()/minRecordSize) {
		return fmt.Errorf("%d records cannot fit in the remaining %d bytes", n, r.remaining())
	}
	if n == 0 {
		r.end(false)
		return r.err
	}
	start := r.off
	cost, nhdrs := 0, 0
	for i := range int(n) {
		at := r.off
		r.varint("offset_delta")
		r.varint("timestamp_delta")
		r.nullable("key")
		r.nullable("value")
		nh := r.uvarint("header_count")
		if r.err != nil {
			return fmt.Errorf("record %d: %w", i, r.err)
		}
		if nh > uint64(d.lim.MaxHeaders) {
			return fmt.Errorf("record %d: %d headers exceed the limit of %d", i, nh, d.lim.MaxHeaders)
		}
		if nh > uint64(r.remaining()/minHeaderSize) {
			return fmt.Errorf("record %d: %d headers cannot fit in the remaining %d bytes", i, nh, r.remaining())
		}
		cost += max(r.off-at, MinRecordCost)
		for range int(nh) {
			at := r.off
			r.bytesN("header_key", r.uvarint("header_key"))
			r.nullable("header_value")
			cost += max(r.off-at, MinHeaderCost)
		}
		if r.err != nil {
			return fmt.Errorf("record %d: %w", i, r.err)
		}
		if cost > d.lim.MaxBatchBytes {
			return fmt.Errorf("record %d: records cost %d bytes (at least %d a record and %d a header), more than the batch limit of %d",
				i, cost, MinRecordCost, MinHeaderCost, d.lim.MaxBatchBytes)
		}
		nhdrs += int(nh)
	}
	r.end(false)
	if r.err != nil {
		return fmt.Errorf("record block: %w", r.err)
	}

	r.off = start
	recs := make([]Record, n)
	var hdrs []Header // one backing array for the batch's headers
	if nhdrs > 0 {
		hdrs = make([]Header, nhdrs)
	}
	for i := range recs {
		rec := &recs[i]
		rec.Offset = baseOff + r.varint("offset_delta")
		rec.Timestamp = baseTS + r.varint("timestamp_delta")
		rec.Key = r.nullable("key")
		rec.Value = r.nullable("value")
		if nh := int(r.uvarint("header_count")); nh > 0 {
			rec.Headers, hdrs = hdrs[:nh:nh], hdrs[nh:]
			for j := range rec.Headers {
				rec.Headers[j].Key = r.string("header_key")
				rec.Headers[j].Value = r.nullable("header_value")
			}
		}
	}
	if r.err != nil { // the first pass read the same bytes
		return fmt.Errorf("record block: %w", r.err)
	}
	b.Records = recs
	return nil
}
