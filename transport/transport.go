// Package transport owns the links between gateways: the Conn interface that the
// mirror engine talks to, the versioned wire protocol (frames, acks, credit,
// resume; see PROTOCOL.md) and its codec. Implementations live in
// sub-packages: transport/quic (quic-go, mutual TLS) and transport/amqp
// (go-amqp, through an AMQP 1.0 broker). transport/transporttest
// generates realistic batches and random frames for tests.
//
// A Batch carries records of one source partition: generic records (offset,
// timestamp, key, value, headers) or, on sessions of version
// VersionKafkaBatches or later, whole Kafka record batches (Batch.Kafka),
// which the package checks (lengths, counts, CRC) and otherwise carries as
// opaque bytes. It knows nothing more about Kafka.
//
// # Versions
//
// A session speaks the version its Welcome chose (NegotiateVersion);
// FrameType.Since names the version that introduced each frame type. A
// Decoder set to the session's version (SetVersion) refuses frames and
// Batch codec bits of later versions as malformed, and CheckVersion tells a
// sender what it must not send. PROTOCOL.md has the table.
//
// # Codec
//
// Encoder and Decoder turn frames into bytes and back: a type byte, a uvarint
// body length, a body of varints and length-prefixed strings. A batch's records
// form one block compressed as a whole with zstd (the default, level fastest),
// s2 or nothing, using github.com/klauspost/compress, the fastest pure-Go
// implementation of both; encoders and decoders are expensive to create and are
// meant to be kept per stream. Encoding reuses scratch buffers and does not
// allocate; decoding checks every length and count against Limits before
// allocating, so a hostile peer gets an error wrapping ErrMalformed, never a
// panic or a huge allocation. Record blocks are scanned before they are
// decoded, each record and header charged at least MinRecordCost and
// MinHeaderCost against Limits.MaxBatchBytes (RecordCost), and control-frame
// lists their size in memory: a frame costs at most about 4 times that
// limit. ReadHandshake reads a handshake frame of at most MaxHandshakeBytes.
//
// # Dictionaries and levels
//
// Small batches compress poorly on their own. A sending side may train a
// zstd dictionary per (leg, topic) from the first 256 KiB of record values
// it sends (Dicts.Observe, zstd.BuildDict: about 15 ms, once per topic and
// session), share it in a Dict frame on the control stream and, after the
// receiver's DictAck, compress that topic's zstd batches of up to 256 KiB
// with it; the zstd frame names the dictionary in its header. A batch is
// therefore never sent before its dictionary is held by the receiver, and
// a batch naming a dictionary the receiver lacks is malformed. At most
// MaxDicts (16) dictionaries per session and direction; they die with the
// session. EncoderOptions.Level picks the zstd level; ChooseCompression
// picks codec and level from link rate and CPU headroom, never from RTT.
//
// Ratio (raw record-block bytes per wire byte of the batch frame) and
// encode MB/s on one core of this project's 2-core machine, JSON events of
// 1 KiB, dictionary trained on 256 KiB of other events of the topic:
//
//	batch      fastest      fastest+dict  better       better+dict
//	1 event    1.64 / 135   2.86 /  88    1.79 /  98   2.95 /  34
//	10 events  3.52 / 364   4.18 / 315    3.67 / 150   4.28 /  62
//	100 events 4.35 / 374   4.46 / 406    4.56 / 244   4.60 / 175
//	64 KiB     4.29 / 430   4.47 / 396    4.50 / 204   4.59 / 127
//
//	go test -run '^$' -bench 'BenchmarkDict$' ./transport/
//
// Dictionaries pay most on small batches; on 64 KiB batches level better
// plus a dictionary reaches 4.59, above the 4.5 that thin links need, at
// about a third of fastest's speed: ChooseCompression uses level better
// only on links of 100 Mbit/s or less (at most 56 MB/s of raw data at 4.5)
// with CPU to spare, and s2 when CPU is short.
//
// # Files
//
//   - transport.go: the frame types, the Conn, Listener and Dialer
//     interfaces, versions and error codes.
//   - wire.go: limits, ErrMalformed, frame type names and versions, and
//     the primitive readers and writers of frame bodies.
//   - codec.go: Encoder (frame bodies, record blocks, compression).
//   - decode.go: Decoder (frame reading, one decode function per body,
//     decompression, record blocks).
//   - kafka.go: the checks on Kafka record batches carried by a Batch.
//   - dict.go: zstd dictionaries (Dict, DictAck, Dicts), levels and
//     ChooseCompression.
package transport

import (
	"context"
	"errors"
	"net"
	"strconv"
	"time"
)

// Protocol versions this build speaks. A peer offering no version in
// [VersionMin, VersionMax] is refused with ErrCodeVersion. Version 2 adds
// the Dict and DictAck frames (zstd dictionaries), used only on sessions
// that agreed on version 2 or more. Version 3 lets a Batch carry Kafka
// record batches (Batch.Kafka).
const (
	VersionMin uint16 = 1
	VersionMax uint16 = 5
	// VersionDicts is the first version with Dict and DictAck.
	VersionDicts uint16 = 2
	// VersionKafkaBatches is the first version whose Batch frames may carry
	// Kafka record batches (Batch.Kafka) instead of records.
	VersionKafkaBatches uint16 = 3
	// VersionDuplex is the first version whose sessions may carry legs in
	// both directions: the dialer's Hello lists the legs it wants to
	// receive (Hello.Receive) and the listener's Welcome the legs it will
	// send back (Welcome.Send). No new frame type.
	VersionDuplex uint16 = 4
	// VersionRelay is the first version whose Hello may name an origin
	// (Hello.Origin): a relay gateway feeding legs of another region's
	// gateway on its behalf. No new frame type.
	VersionRelay uint16 = 5
	// VersionShare is the first version in which several gateways of a
	// region share a leg's source partitions: the dialer's Hello lists
	// the legs it shares (Hello.Shared) and it sends Claim frames naming
	// the partitions it sends; the receiver accepts each partition's
	// batches from its claimer only. Version 5, as VersionRelay.
	VersionShare uint16 = 5
)

// Codec is the compression applied to a batch's record block on the wire.
type Codec uint8

const (
	CodecNone Codec = 0
	CodecZstd Codec = 1
	CodecS2   Codec = 2
)

// Header is one record header.
type Header struct {
	Key   string
	Value []byte
}

// Record is one record of a source partition.
type Record struct {
	Offset    int64 // offset in the source partition
	Timestamp int64 // Unix milliseconds
	Key       []byte
	Value     []byte
	Headers   []Header
}

// Frame is any protocol frame: *Hello, *Welcome, *Resume, *Batch, *Ack, *Credit,
// *Topic, *TopicReady, *Ping, *Pong, *Error, *Goaway, *Groups, *Fenced,
// *Dict, *DictAck, *Claim.
type Frame interface{ frameType() FrameType }

// FrameType is the one-byte type tag of a frame on the wire.
type FrameType uint8

const (
	FrameHello      FrameType = 1
	FrameWelcome    FrameType = 2
	FrameResume     FrameType = 3
	FrameBatch      FrameType = 4
	FrameAck        FrameType = 5
	FrameCredit     FrameType = 6
	FrameTopic      FrameType = 7
	FrameTopicReady FrameType = 8
	FramePing       FrameType = 9
	FramePong       FrameType = 10
	FrameError      FrameType = 11
	FrameGoaway     FrameType = 12
	FrameGroups     FrameType = 13
	FrameFenced     FrameType = 14
	FrameDict       FrameType = 15
	FrameDictAck    FrameType = 16
	FrameClaim      FrameType = 17
)

// Hello opens a session (sender → receiver).
type Hello struct {
	VersionMin, VersionMax uint16
	Gateway                string   // sending gateway's name
	Region                 string   // sending gateway's region
	Legs                   []string // route legs this sender will feed
	Codecs                 []Codec  // codecs the sender can decode (for future receiver→sender data)

	// Version 4 (VersionDuplex) appends the following; a Hello without
	// them, or from an older peer, asks to receive nothing.

	// Receive lists the route legs the dialer wants the listener to send
	// it over this session (the listener's legs to the dialer's gateway).
	Receive []string
	// RecvWindow is the credit window the dialer grants the listener's
	// batches (raw bytes; <= 0 unlimited, as Welcome.Window), and
	// RecvMaxBatchBytes the largest raw batch it accepts (0: the
	// listener's default). Meaningful only when Receive is not empty.
	RecvWindow, RecvMaxBatchBytes int64

	// Version 5 (VersionRelay, VersionShare) appends the following, after
	// the version 4 fields (written even when empty), in this order.

	// Origin, when set, is the gateway whose legs a relay gateway
	// (Gateway) feeds on its behalf: the legs' source is in Origin's
	// region, and the relay forwards that gateway's frames end to end.
	// Empty: Gateway feeds its own legs.
	Origin string
	// Shared lists the legs of Legs whose source partitions this sender
	// shares with the other gateways of its region: it sends only the
	// partitions it claims (Claim), and the receiver sends it a Resume
	// only in answer to a Claim.
	Shared []string
}

// Duplex reports whether the Hello asks to receive legs (version 4).
func (h *Hello) Duplex() bool { return len(h.Receive) > 0 }

// Welcome accepts a session (receiver → sender).
type Welcome struct {
	Version       uint16 // chosen version
	Gateway       string
	Region        string
	Window        int64 // credit: max raw batch bytes in flight, unacknowledged
	MaxBatchBytes int64 // largest raw batch the receiver accepts
	// Send lists the legs of Hello.Receive that the listener will send
	// (version 4 and later only; encoded only when Version >= 4).
	Send []string
}

// Position is where a sender must resume one source partition.
type Position struct {
	Topic      string
	Partition  int32
	NextOffset int64 // first source offset not yet committed at the destination
}

// Resume tells the sender to (re)start a leg from the destination's committed
// positions (receiver → sender). Gen increases with every Resume of a leg;
// batches stamped with an older Gen are dropped by the receiver. Partitions not
// listed have nothing committed.
type Resume struct {
	Leg       string
	Gen       uint64
	Positions []Position
}

// Batch is a run of records from one source partition (sender → receiver).
type Batch struct {
	Leg           string
	Gen           uint64 // Gen of the Resume this batch follows
	Seq           uint64 // unique per session; acknowledged by Ack
	Topic         string // source topic
	Partition     int32  // source partition
	NextOffset    int64  // source offset after this batch
	HighWatermark int64  // source partition high watermark when read (lag)
	Records       []Record
	// Kafka, when not nil, holds whole Kafka record batches of the source
	// partition (message format v2, in offset order, each with records at
	// consecutive offsets), mirrored byte for byte instead of Records, which
	// is then empty. Only sessions of version VersionKafkaBatches or later
	// carry them.
	Kafka []byte

	// WireSize is set by Send and Recv: the batch frame's encoded size on the
	// wire. It is not itself encoded.
	WireSize int
}

// Ack acknowledges batches whose records are committed at the destination
// (receiver → sender).
type Ack struct{ Seqs []uint64 }

// Credit sets a new credit window in bytes (receiver → sender).
type Credit struct{ Window int64 }

// Topic announces a source topic of a leg before its first batch; the receiver
// creates or checks the destination topic and answers TopicReady
// (sender → receiver).
type Topic struct {
	Leg        string
	Name       string
	Partitions int32
	Configs    map[string]string // non-default source topic configs
}

// TopicReady answers Topic (receiver → sender). A non-empty Err means the
// destination topic cannot be used; the sender retries later.
type TopicReady struct {
	Leg  string
	Name string
	Err  string
}

// Ping and Pong measure RTT and prove liveness (either direction).
type Ping struct {
	Nonce  uint64
	SentAt int64 // sender's clock, Unix nanoseconds
}
type Pong struct {
	Nonce  uint64
	SentAt int64 // copied from Ping
}

// Error codes carried by an Error frame.
const (
	ErrCodeInternal   uint16 = 1
	ErrCodeVersion    uint16 = 2 // no common protocol version
	ErrCodeUnknownLeg uint16 = 3 // a leg in Hello is not routed to this receiver
	ErrCodeProtocol   uint16 = 4 // malformed or unexpected frame
	ErrCodeFenced     uint16 = 5 // stale route epoch
	ErrCodeIdentity   uint16 = 6 // Hello or Welcome names a gateway other than the peer certificate's
	ErrCodeForbidden  uint16 = 7 // the peer may not feed a leg it claimed (not its region, unknown gateway, revoked)
	ErrCodeLimit      uint16 = 8 // a listener cap was reached (handshakes, sessions per peer, stripes); retry later
)

// Error reports a fatal session error; the sender of it closes the session.
type Error struct {
	Code    uint16
	Message string
}

// Goaway announces a graceful close: no new batches follow.
type Goaway struct{ Reason string }

// Groups carries committed offsets of the leg's source consumer groups
// (sender → receiver), which the receiver translates and commits at the
// destination. A sender sends offsets that changed since its last Groups.
type Groups struct {
	Leg     string
	Offsets []GroupOffset
}

// Fenced tells the sender that a leg is fenced at its destination (the
// route was failed over): the sender stops reading the leg's source until a
// Resume for the leg arrives (receiver → sender).
type Fenced struct {
	Leg    string
	Epoch  uint64
	Reason string
}

// Claim says which source partitions of a shared leg the session sends
// from now on (sender → receiver, version 5): all of them, not a change;
// an empty list releases every partition. Generation is the generation of
// the source cluster's consumer group in which the sending gateway was
// assigned them (Kafka coordinates the gateways of a region): the receiver
// refuses a partition claimed in a generation older than one it has
// accepted for it (a paused gateway waking up as a zombie). Every Claim
// is answered by a Resume, and only the claimer's batches of a partition
// are accepted.
type Claim struct {
	Leg        string
	Generation int32
	Member     string // the group member ID (status and logs)
	Topics     []ClaimedTopic
}

// ClaimedTopic is one topic's claimed partitions.
type ClaimedTopic struct {
	Topic      string
	Partitions []int32
}

// GroupOffset is one group's committed offset (the next to read) of one
// source partition.
type GroupOffset struct {
	Group     string
	Topic     string
	Partition int32
	Offset    int64
}

func (*Hello) frameType() FrameType      { return FrameHello }
func (*Welcome) frameType() FrameType    { return FrameWelcome }
func (*Resume) frameType() FrameType     { return FrameResume }
func (*Batch) frameType() FrameType      { return FrameBatch }
func (*Ack) frameType() FrameType        { return FrameAck }
func (*Credit) frameType() FrameType     { return FrameCredit }
func (*Topic) frameType() FrameType      { return FrameTopic }
func (*TopicReady) frameType() FrameType { return FrameTopicReady }
func (*Ping) frameType() FrameType       { return FramePing }
func (*Pong) frameType() FrameType       { return FramePong }
func (*Error) frameType() FrameType      { return FrameError }
func (*Goaway) frameType() FrameType     { return FrameGoaway }
func (*Groups) frameType() FrameType     { return FrameGroups }
func (*Fenced) frameType() FrameType     { return FrameFenced }
func (*Claim) frameType() FrameType      { return FrameClaim }

// Conn is an established, handshaken session between a sending and a
// receiving gateway. Send and Recv may be called concurrently with each other;
// Send may be called from several goroutines.
type Conn interface {
	// Send writes a frame. Batches travel on data lanes chosen by
	// (Leg, Topic, Partition), so batches of one partition arrive in the order
	// sent; all other frames travel in order on the control lane. Batches are
	// compressed with the session's codec. Send blocks while the transport's own
	// buffers are full, until ctx ends or the session closes.
	Send(ctx context.Context, f Frame) error
	// Recv returns the next frame from the peer (Ping/Pong are answered and
	// consumed by the transport itself and never returned).
	Recv(ctx context.Context) (Frame, error)
	// Hello is what the sender said when opening; Welcome what the receiver
	// answered.
	Hello() *Hello
	Welcome() *Welcome
	// Stats is a snapshot of the session's counters.
	Stats() ConnStats
	// Close ends the session (with an Error frame when err is a *Error) and
	// waits for its goroutines. Safe to call more than once.
	Close(err error) error
	// Done is closed when the session has ended; Err then says why.
	Done() <-chan struct{}
	Err() error
	RemoteAddr() net.Addr
}

// Tentative is implemented by a Conn that can say whether the peer's Hello
// came as 0-RTT data, which an attacker can replay (and then never complete
// the handshake, so the session ends on its own). A listener may hand such
// a session over before the handshake completes; until then, and in Meridian
// even after, it must not displace anything.
type Tentative interface {
	Tentative() bool
}

// ConnStats counts a session's traffic.
type ConnStats struct {
	RTT         time.Duration // smoothed round-trip time
	RawBytes    int64         // uncompressed record-block bytes of batches sent+received
	WireBytes   int64         // bytes of all frames sent+received as encoded
	FramesSent  int64
	FramesRecvd int64
}

// Accept decides whether a receiver takes a session: it returns the Welcome to
// send, or an *Error to refuse with.
type Accept func(h *Hello) (*Welcome, error)

// Listener accepts sessions.
type Listener interface {
	Accept(ctx context.Context) (Conn, error)
	Addr() net.Addr
	Close() error
}

// Dialer opens sessions.
type Dialer interface {
	Dial(ctx context.Context, addr string, h *Hello) (Conn, error)
}

// ErrClosed is returned by Send and Recv after the session ended normally.
var ErrClosed = errors.New("transport: session closed")

func (e *Error) Error() string {
	return "peer error " + errCodeName(e.Code) + ": " + e.Message
}

func errCodeName(c uint16) string {
	switch c {
	case ErrCodeInternal:
		return "internal"
	case ErrCodeVersion:
		return "version"
	case ErrCodeUnknownLeg:
		return "unknown-leg"
	case ErrCodeProtocol:
		return "protocol"
	case ErrCodeFenced:
		return "fenced"
	case ErrCodeIdentity:
		return "identity"
	case ErrCodeForbidden:
		return "forbidden"
	case ErrCodeLimit:
		return "limit"
	default:
		return "unknown"
	}
}

// String names a codec; unknown values print as "codec(N)".
func (c Codec) String() string {
	switch c {
	case CodecNone:
		return "none"
	case CodecZstd:
		return "zstd"
	case CodecS2:
		return "s2"
	default:
		return "codec(" + strconv.Itoa(int(c)) + ")"
	}
}

// ParseCodec parses "none", "zstd" or "s2".
func ParseCodec(s string) (Codec, error) {
	switch s {
	case "none":
		return CodecNone, nil
	case "zstd", "":
		return CodecZstd, nil
	case "s2":
		return CodecS2, nil
	}
	return 0, errors.New("unknown codec " + strconv.Quote(s) + " (want none, zstd or s2)")
}

// NegotiateVersion returns the highest version in both [VersionMin,
// VersionMax] and [peerMin, peerMax]; ok is false if there is none.
func NegotiateVersion(peerMin, peerMax uint16) (v uint16, ok bool) {
	lo, hi := max(peerMin, VersionMin), min(peerMax, VersionMax)
	if lo > hi {
		return 0, false
	}
	return hi, true
}

// CodeName names the error's code ("version", "fenced", ...; "unknown" for
// codes this build does not know).
func (e *Error) CodeName() string { return errCodeName(e.Code) }
