// Package transporttest helps test code that uses package transport: an
// in-memory Network of listeners and dialers (memnet.go), generators of
// realistic record batches (JSON events of a chosen size that compress like
// real ones), and random frames of every type for property tests and fuzz
// seeds.
//
// It must not be imported by production code.
package transporttest

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"strconv"

	"github.com/meridian-gw/meridian/transport"
)

// NewRand returns a deterministic generator for seed.
func NewRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)) }

var (
	actions   = []string{"view", "click", "add_to_cart", "checkout", "search", "login", "logout", "scroll"}
	countries = []string{"DE", "FR", "NL", "US", "BR", "JP", "IN", "NO", "SG", "ZA"}
	cities    = []string{"Berlin", "Paris", "Rotterdam", "Austin", "Recife", "Osaka", "Pune", "Bergen", "Singapore", "Durban"}
	agents    = []string{
		"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:127.0) Gecko/20100101 Firefox/127.0",
	}
)

const alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

func appendRandom(b []byte, rng *rand.Rand, n int) []byte {
	for range n {
		b = append(b, alnum[rng.IntN(len(alnum))])
	}
	return b
}

// JSONEvent returns one JSON event of about size bytes (at least ~300): a
// clickstream-like object with ids, timestamps, enums, a user agent and a
// random token, padded with a list of items. Runs of such events compress
// about 3-6x, like real JSON topics.
func JSONEvent(rng *rand.Rand, ts int64, size int) []byte {
	b := make([]byte, 0, size+64)
	b = append(b, `{"event_id":"`...)
	b = appendRandom(b, rng, 8)
	b = append(b, '-')
	b = appendRandom(b, rng, 4)
	b = append(b, '-')
	b = appendRandom(b, rng, 12)
	b = append(b, `","ts":`...)
	b = strconv.AppendInt(b, ts, 10)
	b = append(b, `,"user_id":`...)
	b = strconv.AppendInt(b, int64(rng.IntN(5_000_000)), 10)
	b = append(b, `,"action":"`...)
	b = append(b, actions[rng.IntN(len(actions))]...)
	b = append(b, `","page":"/products/`...)
	b = strconv.AppendInt(b, int64(rng.IntN(100_000)), 10)
	i := rng.IntN(len(countries))
	b = append(b, `","geo":{"country":"`...)
	b = append(b, countries[i]...)
	b = append(b, `","city":"`...)
	b = append(b, cities[i]...)
	b = append(b, `"},"ua":"`...)
	b = append(b, agents[rng.IntN(len(agents))]...)
	b = append(b, `","amount":`...)
	b = strconv.AppendFloat(b, float64(rng.IntN(100_000))/100, 'f', 2, 64)
	b = append(b, `,"token":"`...)
	b = appendRandom(b, rng, 24)
	b = append(b, `","items":[`...)
	for n := 0; len(b) < size-60; n++ {
		if n > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"sku":"SKU-`...)
		b = strconv.AppendInt(b, int64(rng.IntN(50_000)), 10)
		b = append(b, `","qty":`...)
		b = strconv.AppendInt(b, int64(1+rng.IntN(5)), 10)
		b = append(b, `,"price":`...)
		b = strconv.AppendFloat(b, float64(rng.IntN(20_000))/100, 'f', 2, 64)
		b = append(b, '}')
	}
	b = append(b, "]}"...)
	return b
}

// JSONRecords returns n records with offsets from firstOffset, timestamps a
// few milliseconds apart, 16-byte keys, JSON values of about size bytes and a
// header on every other record.
func JSONRecords(rng *rand.Rand, n, size int, firstOffset int64) []transport.Record {
	recs := make([]transport.Record, n)
	ts := int64(1_760_000_000_000) + rng.Int64N(1_000_000)
	for i := range recs {
		ts += int64(rng.IntN(5))
		r := &recs[i]
		r.Offset = firstOffset + int64(i)
		r.Timestamp = ts
		r.Key = appendRandom(make([]byte, 0, 16), rng, 16)
		r.Value = JSONEvent(rng, ts, size)
		if i%2 == 0 {
			r.Headers = []transport.Header{{Key: "content-type", Value: []byte("application/json")}}
		}
	}
	return recs
}

// JSONBatch returns a batch of 1 KiB JSON records whose uncompressed record
// block is at least rawBytes.
func JSONBatch(rng *rand.Rand, leg, topic string, partition int32, seq uint64, firstOffset int64, rawBytes int) *transport.Batch {
	n := max(1, rawBytes/1060)
	b := &transport.Batch{Leg: leg, Gen: 1, Seq: seq, Topic: topic, Partition: partition}
	b.Records = JSONRecords(rng, n, 1024, firstOffset)
	for b.RawSize() < rawBytes {
		b.Records = append(b.Records, JSONRecords(rng, 1, 1024, firstOffset+int64(len(b.Records)))...)
	}
	b.NextOffset = firstOffset + int64(len(b.Records))
	b.HighWatermark = b.NextOffset + int64(rng.IntN(1000))
	return b
}

// FrameTypes lists every frame type.
var FrameTypes = []transport.FrameType{
	transport.FrameHello, transport.FrameWelcome, transport.FrameResume, transport.FrameBatch,
	transport.FrameAck, transport.FrameCredit, transport.FrameTopic, transport.FrameTopicReady,
	transport.FramePing, transport.FramePong, transport.FrameError, transport.FrameGoaway, transport.FrameGroups, transport.FrameFenced,
	transport.FrameDict, transport.FrameDictAck, transport.FrameClaim,
}

// RandomFrame returns a random frame of type t. Lists are nil when empty
// (as decoded), record keys, values and header values are nil, empty or
// random, and integers span their whole range.
func RandomFrame(rng *rand.Rand, t transport.FrameType) transport.Frame {
	switch t {
	case transport.FrameHello:
		h := &transport.Hello{
			VersionMin: uint16(rng.Uint32()), VersionMax: uint16(rng.Uint32()),
			Gateway: str(rng), Region: str(rng),
		}
		for range rng.IntN(4) {
			h.Legs = append(h.Legs, str(rng))
		}
		for range rng.IntN(4) {
			h.Codecs = append(h.Codecs, transport.Codec(rng.Uint32()))
		}
		if rng.IntN(2) == 0 { // version 4: legs to receive and the dialer's window
			h.VersionMax = max(h.VersionMax, transport.VersionDuplex)
			for range 1 + rng.IntN(3) {
				h.Receive = append(h.Receive, str(rng))
			}
			h.RecvWindow, h.RecvMaxBatchBytes = i64(rng), i64(rng)
		}
		if rng.IntN(2) == 0 { // version 5: shared legs
			h.VersionMax = max(h.VersionMax, transport.VersionShare)
			for range 1 + rng.IntN(3) {
				h.Shared = append(h.Shared, str(rng))
			}
		}
		if rng.IntN(3) == 0 { // version 5: a relay feeding another gateway's legs
			h.VersionMax = max(h.VersionMax, transport.VersionRelay)
			h.Origin = str(rng)
		}
		return h
	case transport.FrameWelcome:
		w := &transport.Welcome{Version: uint16(rng.Uint32()), Gateway: str(rng), Region: str(rng),
			Window: i64(rng), MaxBatchBytes: i64(rng)}
		if rng.IntN(2) == 0 {
			w.Version = transport.VersionDuplex + uint16(rng.IntN(2))
		}
		if w.Version >= transport.VersionDuplex {
			for range rng.IntN(3) {
				w.Send = append(w.Send, str(rng))
			}
		}
		return w
	case transport.FrameResume:
		m := &transport.Resume{Leg: str(rng), Gen: u64(rng)}
		for range rng.IntN(5) {
			m.Positions = append(m.Positions, transport.Position{Topic: str(rng), Partition: int32(rng.Uint32()), NextOffset: i64(rng)})
		}
		return m
	case transport.FrameBatch:
		b := &transport.Batch{Leg: str(rng), Gen: u64(rng), Seq: u64(rng), Topic: str(rng),
			Partition: int32(rng.Uint32()), NextOffset: i64(rng), HighWatermark: i64(rng)}
		base, ts := i64(rng), i64(rng)
		for i := range rng.IntN(20) {
			r := transport.Record{Offset: base + int64(i)*int64(1+rng.IntN(3)), Timestamp: ts + rng.Int64N(2000) - 1000,
				Key: bytesOrNil(rng), Value: bytesOrNil(rng)}
			if rng.IntN(20) == 0 {
				r.Offset, r.Timestamp = i64(rng), i64(rng) // deltas that wrap
			}
			for range rng.IntN(3) {
				r.Headers = append(r.Headers, transport.Header{Key: str(rng), Value: bytesOrNil(rng)})
			}
			b.Records = append(b.Records, r)
		}
		if rng.IntN(3) == 0 { // compressible
			b.Records = append(b.Records, JSONRecords(rng, 1+rng.IntN(8), 200+rng.IntN(1000), base)...)
		}
		return b
	case transport.FrameAck:
		a := &transport.Ack{}
		s := u64(rng)
		for range rng.IntN(10) {
			if rng.IntN(4) == 0 {
				s = u64(rng)
			} else {
				s++
			}
			a.Seqs = append(a.Seqs, s)
		}
		return a
	case transport.FrameCredit:
		return &transport.Credit{Window: i64(rng)}
	case transport.FrameTopic:
		m := &transport.Topic{Leg: str(rng), Name: str(rng), Partitions: int32(rng.Uint32())}
		if n := rng.IntN(4); n > 0 {
			m.Configs = map[string]string{}
			for i := range n {
				m.Configs[fmt.Sprintf("k%d.%s", i, str(rng))] = str(rng)
			}
		}
		return m
	case transport.FrameTopicReady:
		return &transport.TopicReady{Leg: str(rng), Name: str(rng), Err: str(rng)}
	case transport.FramePing:
		return &transport.Ping{Nonce: u64(rng), SentAt: i64(rng)}
	case transport.FramePong:
		return &transport.Pong{Nonce: u64(rng), SentAt: i64(rng)}
	case transport.FrameError:
		return &transport.Error{Code: uint16(rng.Uint32()), Message: str(rng)}
	case transport.FrameGoaway:
		return &transport.Goaway{Reason: str(rng)}
	case transport.FrameFenced:
		return &transport.Fenced{Leg: str(rng), Epoch: rng.Uint64N(1 << 20), Reason: str(rng)}
	case transport.FrameGroups:
		g := &transport.Groups{Leg: str(rng)}
		for range rng.IntN(4) {
			g.Offsets = append(g.Offsets, transport.GroupOffset{Group: str(rng), Topic: str(rng), Partition: rng.Int32N(64), Offset: rng.Int64N(1 << 40)})
		}
		return g
	case transport.FrameDict:
		// Data is random bytes: the frame decodes, the dictionary inside
		// is checked only when a session adds it.
		d := &transport.Dict{ID: rng.Uint32(), Leg: str(rng), Topic: str(rng)}
		if n := rng.IntN(600); n > 0 && rng.IntN(4) != 0 {
			d.Data = make([]byte, n)
			for i := range d.Data {
				d.Data[i] = byte(rng.Uint32())
			}
		}
		return d
	case transport.FrameDictAck:
		return &transport.DictAck{ID: rng.Uint32()}
	case transport.FrameClaim:
		c := &transport.Claim{Leg: str(rng), Generation: int32(rng.Uint32()), Member: str(rng)}
		for range rng.IntN(4) {
			ct := transport.ClaimedTopic{Topic: str(rng)}
			for range rng.IntN(5) {
				ct.Partitions = append(ct.Partitions, int32(rng.Uint32()))
			}
			c.Topics = append(c.Topics, ct)
		}
		return c
	}
	panic(fmt.Sprintf("transporttest: unknown frame type %s", t))
}

func str(rng *rand.Rand) string {
	switch rng.IntN(5) {
	case 0:
		return ""
	case 1:
		return "ünïcode-✓-" + strconv.Itoa(rng.IntN(100))
	}
	return string(appendRandom(nil, rng, rng.IntN(40)))
}

func bytesOrNil(rng *rand.Rand) []byte {
	switch rng.IntN(4) {
	case 0:
		return nil
	case 1:
		return []byte{}
	}
	b := make([]byte, rng.IntN(300))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func u64(rng *rand.Rand) uint64 {
	if rng.IntN(2) == 0 {
		return uint64(rng.IntN(1000))
	}
	return rng.Uint64()
}

func i64(rng *rand.Rand) int64 {
	if rng.IntN(2) == 0 {
		return int64(rng.IntN(2000)) - 1000
	}
	return int64(rng.Uint64())
}

// KafkaBatches returns n Kafka record batches (message format v2) of
// about size bytes each, as Batch.Kafka carries them: valid headers and
// CRCs around a body of JSON-like bytes that the transport never parses.
// compressed sets the batches' compression attribute (snappy) without
// compressing the body.
func KafkaBatches(rng *rand.Rand, n, size int, compressed bool) []byte {
	var out []byte
	for i := range n {
		var body []byte
		for len(body) < size {
			body = fmt.Appendf(body, `{"id":%d,"site":"ship-%d","temp":%d.%d}`, rng.IntN(1_000_000), rng.IntN(40), rng.IntN(40), rng.IntN(10))
		}
		recs := int32(1 + rng.IntN(50))
		attrs := uint16(0)
		if compressed {
			attrs = 2 // snappy
		}
		h := make([]byte, 61)
		binary.BigEndian.PutUint64(h[0:], uint64(i*1000))          // base offset
		binary.BigEndian.PutUint32(h[8:], uint32(61-12+len(body))) // length
		h[16] = 2                                                  // magic
		binary.BigEndian.PutUint16(h[21:], attrs)
		binary.BigEndian.PutUint32(h[23:], uint32(recs-1)) // last offset delta
		binary.BigEndian.PutUint64(h[27:], 1_700_000_000_000)
		binary.BigEndian.PutUint64(h[35:], 1_700_000_000_000)
		binary.BigEndian.PutUint64(h[43:], ^uint64(0)) // producer ID -1
		binary.BigEndian.PutUint16(h[51:], 0xffff)
		binary.BigEndian.PutUint32(h[53:], 0xffffffff)
		binary.BigEndian.PutUint32(h[57:], uint32(recs))
		b := append(h, body...)
		binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[21:], crc32.MakeTable(crc32.Castagnoli)))
		out = append(out, b...)
	}
	return out
}
