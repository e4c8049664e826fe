package transport

import (
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// Dictionary limits. A session holds at most MaxDicts dictionaries per
// direction; a peer that sends more ends the session with ErrCodeProtocol.
const (
	MaxDicts     = 16
	MaxDictBytes = 128 << 10 // a Dict frame's dictionary, as sent

	// dictSampleBytes is how many bytes of record values a sender samples
	// per (leg, topic) before it trains that topic's dictionary.
	dictSampleBytes = 256 << 10
	// dictHistoryBytes is the raw history inside a trained dictionary.
	dictHistoryBytes = 32 << 10
	// dictMaxBatch: batches whose record block is larger are compressed
	// without the dictionary, which buys little there (FACTS.md).
	dictMaxBatch = 256 << 10
)

// Dict shares a zstd dictionary with the receiver of batches (sender →
// receiver, control stream). The sender compresses no batch with it before
// the receiver's DictAck. ID is what zstd frames name in their header
// (Dictionary_ID); Leg and Topic are the scope it was trained on.
type Dict struct {
	ID    uint32
	Leg   string
	Topic string
	Data  []byte // zstd dictionary format (magic 0xEC30A437), as zstd.BuildDict writes
}

// DictAck confirms that the receiver holds dictionary ID (receiver →
// sender, control stream).
type DictAck struct{ ID uint32 }

func (*Dict) frameType() FrameType    { return FrameDict }
func (*DictAck) frameType() FrameType { return FrameDictAck }

// Level is the zstd compression level of an Encoder. The zero value is
// LevelFastest, the package default.
type Level uint8

const (
	LevelFastest Level = 0 // zstd.SpeedFastest
	LevelDefault Level = 1 // zstd.SpeedDefault
	LevelBetter  Level = 2 // zstd.SpeedBetterCompression
)

// String names a level; unknown values print as "level(N)".
func (l Level) String() string {
	switch l {
	case LevelFastest:
		return "fastest"
	case LevelDefault:
		return "default"
	case LevelBetter:
		return "better"
	}
	return "level(" + strconv.Itoa(int(l)) + ")"
}

func (l Level) zstd() (zstd.EncoderLevel, error) {
	switch l {
	case LevelFastest:
		return zstd.SpeedFastest, nil
	case LevelDefault:
		return zstd.SpeedDefault, nil
	case LevelBetter:
		return zstd.SpeedBetterCompression, nil
	}
	return 0, fmt.Errorf("unknown zstd level %s", l)
}

// ChooseCompression picks the codec and zstd level for a link from what
// limits it: the link rate (bits per second the path sustains, 0 if
// unknown) and the CPU headroom (the idle fraction of the cores the gateway
// may use, 0-1). It never looks at RTT: a long RTT says nothing about
// whether bytes or cycles are short, and a fast long-haul link compressed
// hard would leave its bandwidth unused while the encoder runs.
//
//   - headroom below 0.15: s2, several times cheaper than zstd fastest.
//   - link up to 100 Mbit/s and headroom of at least 0.3: zstd better. At
//     ratio 4.5 the link carries at most 56 MB/s of raw data, about a fifth
//     of one core at level better's 265 MB/s.
//   - otherwise (fast or unknown link): zstd fastest.
func ChooseCompression(linkBitsPerSec float64, cpuHeadroom float64) (Codec, Level) {
	switch {
	case cpuHeadroom < 0.15:
		return CodecS2, LevelFastest
	case linkBitsPerSec > 0 && linkBitsPerSec <= 100e6 && cpuHeadroom >= 0.3:
		return CodecZstd, LevelBetter
	}
	return CodecZstd, LevelFastest
}

// Dicts is one session's zstd dictionaries for one direction of batches.
// Dictionaries belong to a session: a new session starts without any.
//
// On the sending side (NewSendDicts) it samples the record values of sent
// batches per (leg, topic) and trains a dictionary once a topic has enough
// (Observe); the dictionary is used by Encoders only after Acked. On the
// receiving side (NewRecvDicts) it holds what the peer sent (Add), for
// Decoders. Safe for concurrent use.
type Dicts struct {
	mu      sync.RWMutex
	byID    map[uint32]*dictEntry
	ready   map[dictScope]*dictEntry // sender: acknowledged, in use
	samples map[dictScope]*dictSamples
	nextID  uint32
	closed  map[dictScope]bool // sender: trained, in training or given up

	// zdec decodes with every dictionary held (zdecN of them), shared by
	// the Decoders of the session's streams (receiver side); zmu orders
	// its rebuilds.
	zmu   sync.Mutex
	zdec  *zstd.Decoder
	zdecN int
}

type dictScope struct{ leg, topic string }

type dictEntry struct {
	id    uint32
	scope dictScope
	data  []byte
	acked bool
}

type dictSamples struct {
	vals  [][]byte
	bytes int
}

// NewSendDicts returns the dictionaries of a side that sends batches.
func NewSendDicts() *Dicts {
	return &Dicts{
		byID: map[uint32]*dictEntry{}, ready: map[dictScope]*dictEntry{},
		samples: map[dictScope]*dictSamples{}, closed: map[dictScope]bool{},
	}
}

// NewRecvDicts returns the dictionaries of a side that receives batches.
func NewRecvDicts() *Dicts { return &Dicts{byID: map[uint32]*dictEntry{}} }

// Observe samples b's record values. When b's (leg, topic) has enough
// samples it trains a dictionary (taking tens of milliseconds, once per
// topic) and returns the Dict frame to send to the peer; otherwise nil. At
// most MaxDicts topics are sampled or trained, so memory stays under
// MaxDicts × 256 KiB of samples.
func (t *Dicts) Observe(b *Batch) *Dict {
	if len(b.Records) == 0 {
		return nil
	}
	sc := dictScope{b.Leg, b.Topic}
	t.mu.Lock()
	if t.closed == nil || t.closed[sc] {
		t.mu.Unlock()
		return nil
	}
	s := t.samples[sc]
	if s == nil {
		if len(t.samples)+int(t.nextID) >= MaxDicts {
			t.mu.Unlock()
			return nil
		}
		s = &dictSamples{}
		t.samples[sc] = s
	}
	for i := range b.Records {
		v := b.Records[i].Value
		if len(v) == 0 || s.bytes >= dictSampleBytes {
			continue
		}
		v = v[:min(len(v), dictSampleBytes-s.bytes)]
		s.vals = append(s.vals, append([]byte(nil), v...))
		s.bytes += len(v)
	}
	if s.bytes < dictSampleBytes {
		t.mu.Unlock()
		return nil
	}
	delete(t.samples, sc)
	t.closed[sc] = true
	t.nextID++
	id := t.nextID
	t.mu.Unlock()

	data, err := trainDict(id, s.vals)
	if err != nil {
		return nil // the topic goes without; its ID stays spent
	}
	t.mu.Lock()
	t.byID[id] = &dictEntry{id: id, scope: sc, data: data}
	t.mu.Unlock()
	return &Dict{ID: id, Leg: b.Leg, Topic: b.Topic, Data: data}
}

// trainDict builds a zstd dictionary from samples: entropy tables from all
// of them and, as history, the most recent samples up to dictHistoryBytes.
func trainDict(id uint32, samples [][]byte) ([]byte, error) {
	var hist []byte
	for i := len(samples) - 1; i >= 0 && len(hist) < dictHistoryBytes; i-- {
		hist = append(hist, samples[i]...)
	}
	hist = hist[:min(len(hist), dictHistoryBytes)]
	return zstd.BuildDict(zstd.BuildDictOptions{
		ID:       id,
		Contents: samples,
		History:  hist,
		Offsets:  [3]int{1, 4, 8},
		Level:    zstd.SpeedBetterCompression,
	})
}

// Ack marks dictionary id as held by the peer: Encoders use it from now on.
// An id this side never sent, or one acknowledged before, is an error.
func (t *Dicts) Ack(id uint32) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.byID[id]
	if e == nil || t.ready == nil {
		return fmt.Errorf("ack of dictionary %d, which was never sent", id)
	}
	if e.acked {
		return fmt.Errorf("dictionary %d acknowledged twice", id)
	}
	e.acked = true
	t.ready[e.scope] = e
	return nil
}

// Add stores a dictionary the peer sent. It fails (and the session should
// end with ErrCodeProtocol) if d reuses an ID, uses ID 0, would be the
// (MaxDicts+1)th, or is not a valid zstd dictionary with ID d.ID.
func (t *Dicts) Add(d *Dict) error {
	if d.ID == 0 {
		return errors.New("dictionary id 0 is reserved")
	}
	if len(d.Data) > MaxDictBytes {
		return fmt.Errorf("dictionary %d of %d bytes exceeds the limit of %d", d.ID, len(d.Data), MaxDictBytes)
	}
	id, err := dictID(d.Data)
	if err != nil {
		return fmt.Errorf("dictionary %d: %w", d.ID, err)
	}
	if id != d.ID {
		return fmt.Errorf("dictionary %d: its data names id %d", d.ID, id)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byID[d.ID] != nil {
		return fmt.Errorf("dictionary %d sent twice", d.ID)
	}
	if len(t.byID) >= MaxDicts {
		return fmt.Errorf("dictionary %d exceeds the limit of %d per session", d.ID, MaxDicts)
	}
	t.byID[d.ID] = &dictEntry{id: d.ID, data: d.Data, acked: true}
	return nil
}

// dictID checks that data is a zstd dictionary and returns its ID.
func dictID(data []byte) (uint32, error) {
	// A decoder built with it parses it completely; concurrency 1 starts
	// no goroutines.
	z, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderDicts(data))
	if err != nil {
		return 0, fmt.Errorf("invalid zstd dictionary: %w", err)
	}
	z.Close()
	if len(data) < 8 {
		return 0, errors.New("invalid zstd dictionary: too short")
	}
	return uint32(data[4]) | uint32(data[5])<<8 | uint32(data[6])<<16 | uint32(data[7])<<24, nil
}

// forBatch returns the acknowledged dictionary of (leg, topic), or nil.
func (t *Dicts) forBatch(leg, topic string) *dictEntry {
	t.mu.RLock()
	e := t.ready[dictScope{leg, topic}]
	t.mu.RUnlock()
	return e
}

// get returns dictionary id, or nil.
func (t *Dicts) get(id uint32) *dictEntry {
	t.mu.RLock()
	e := t.byID[id]
	t.mu.RUnlock()
	return e
}

// all returns the data of every dictionary, for a decoder.
func (t *Dicts) all() (ids []uint32, data [][]byte) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for id, e := range t.byID {
		ids = append(ids, id)
		data = append(data, e.data)
	}
	return ids, data
}

// decoder returns the zstd decoder of every dictionary held, built with
// opts the first time and again when dictionaries have been added since:
// one per session, however many streams decode. A replaced decoder is not
// closed (another stream may be decoding with it; with concurrency 1 it
// holds no goroutine) but left to the garbage collector. DecodeAll on it
// is safe for concurrent use.
func (t *Dicts) decoder(opts []zstd.DOption) (*zstd.Decoder, error) {
	t.zmu.Lock()
	defer t.zmu.Unlock()
	if t.zdec != nil && t.zdecN == t.Len() {
		return t.zdec, nil
	}
	_, data := t.all()
	z, err := zstd.NewReader(nil, append(opts, zstd.WithDecoderDicts(data...))...)
	if err != nil {
		return nil, fmt.Errorf("new zstd decoder with %d dictionaries: %w", len(data), err)
	}
	t.zdec, t.zdecN = z, len(data)
	return z, nil
}

// Acked is the number of dictionaries the peer acknowledged (sender side).
func (t *Dicts) Acked() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.ready)
}

// Len is the number of dictionaries held (sent or received).
func (t *Dicts) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.byID)
}
