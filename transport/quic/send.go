package quic

// The send side of a session: lanes and their placement, and the senders
// that encode frames and write them to a stream.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"

	"github.com/meridian-gw/meridian/transport"
)

// lane returns the sender of lane i, opening its stream on first use.
func (c *Conn) lane(i int) (*sender, error) {
	c.lanesMu.Lock()
	defer c.lanesMu.Unlock()
	return c.laneLocked(i)
}

// laneLocked returns lane i of the first stripe, opening it on first use.
func (c *Conn) laneLocked(i int) (*sender, error) {
	if s := c.lanes[i]; s != nil {
		return s, nil
	}
	if c.lanesClosed {
		if err := c.Err(); err != nil {
			return nil, err
		}
		return nil, transport.ErrClosed
	}
	s, err := c.openLane(c.first, fmt.Sprintf("lane %d", i), laneQueue, nil, nil)
	if err != nil {
		return nil, err
	}
	c.lanes[i] = s
	return s, nil
}

// openLanesLocked opens a dialer's lanes on a stripe: lane senders with a
// queue each (v1, PlacePinned), or writers that take batches from dataQ
// (PlaceAny).
func (c *Conn) openLanesLocked(st *stripe) error {
	name := func(i int) string {
		if st.idx == 0 {
			return fmt.Sprintf("lane %d", i)
		}
		return fmt.Sprintf("stripe %d lane %d", st.idx, i)
	}
	for i := range c.cfg.lanes {
		var err error
		switch {
		case c.anyPlace:
			var s *sender
			if s, err = c.openLane(st, name(i), 0, c.dataQ, c.dataFree); err == nil {
				st.writers = append(st.writers, s)
			}
		case st.idx == 0:
			_, err = c.laneLocked(i)
		default:
			var s *sender
			if s, err = c.openLane(st, name(i), laneQueue, nil, nil); err == nil {
				st.lanes = append(st.lanes, s)
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// openLane opens a lane stream on stripe st and starts its writer. With q
// nil the sender has its own queue of depth; otherwise it takes frames from
// the shared q (and recycles buffers into free).
func (c *Conn) openLane(st *stripe, name string, depth int, q, free chan []byte) (*sender, error) {
	rs, err := st.qc.OpenUniStream()
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, c.stripeErr(st, err))
	}
	kind := streamKindLane
	if c.striped {
		kind = streamKindSeqLane
	}
	var enc *transport.Encoder
	if q == nil {
		if enc, err = c.newEncoder(); err != nil {
			rs.CancelWrite(0)
			return nil, err
		}
	}
	// The kind byte goes out at once (a fresh stream always has flow-control
	// credit for it), so the peer sees the lane before its first batch.
	if _, err := rs.Write([]byte{kind}); err != nil {
		rs.CancelWrite(0)
		return nil, fmt.Errorf("open %s: %w", name, c.stripeErr(st, err))
	}
	s := newSender(c, name, depth, enc, rs)
	s.st = st
	if q != nil {
		s.q, s.free, s.shared = q, free, true
	}
	c.writers.Add(1)
	go s.run()
	return s, nil
}

// newEncoder returns an encoder for batches this side sends.
func (c *Conn) newEncoder() (*transport.Encoder, error) {
	return transport.NewEncoderOptions(c.sendCodec, transport.EncoderOptions{Level: c.cfg.level, Dicts: c.txDicts})
}

// laneOf maps a batch to a lane by FNV-1a of (leg, topic, partition), so
// that one partition's batches always share a stream and stay in order.
func laneOf(b *transport.Batch, lanes int) int {
	if lanes <= 1 {
		return 0
	}
	return int(partHash(b) % uint64(lanes))
}

// partHash is FNV-1a of (leg, 0xff, topic, 0xff, partition as 4
// little-endian bytes).
func partHash(b *transport.Batch) uint64 {
	const prime = 1099511628211
	h := uint64(14695981039346656037)
	for i := 0; i < len(b.Leg); i++ {
		h = (h ^ uint64(b.Leg[i])) * prime
	}
	h = (h ^ 0xff) * prime
	for i := 0; i < len(b.Topic); i++ {
		h = (h ^ uint64(b.Topic[i])) * prime
	}
	h = (h ^ 0xff) * prime
	p := uint32(b.Partition)
	for range 4 {
		h = (h ^ uint64(p&0xff)) * prime
		p >>= 8
	}
	return h
}

// sendStream is the part of a QUIC send stream a sender uses.
type sendStream interface {
	io.WriteCloser // Close finishes the send direction only
	SetWriteDeadline(time.Time) error
}

// sender serializes frames onto one stream: callers encode under sem and
// queue the bytes; run writes them. A PlaceAny writer (shared) has no queue
// of its own: it takes encoded batches from the session's dataQ.
type sender struct {
	c      *Conn
	st     *stripe // nil for the control stream
	name   string
	sem    chan struct{} // held while encoding and queueing one frame
	enc    *transport.Encoder
	q      chan []byte
	free   chan []byte
	shared bool
	stream sendStream
	broken atomic.Bool // a write failed, perhaps part-way through a frame
}

func newSender(c *Conn, name string, depth int, enc *transport.Encoder, st sendStream) *sender {
	return &sender{
		c: c, name: name, enc: enc, stream: st,
		sem:  make(chan struct{}, 1),
		q:    make(chan []byte, depth),
		free: make(chan []byte, depth+1),
	}
}

// send encodes f and queues it. A batch on a sequenced lane (seqd) is
// preceded by its partition sequence number seq.
func (s *sender) send(ctx context.Context, f transport.Frame, seq uint64, seqd bool) error {
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-s.c.ctx.Done():
		return s.c.Err()
	}
	defer func() { <-s.sem }()

	var buf []byte
	select {
	case buf = <-s.free:
	default:
	}
	var err error
	raw := 0
	b, isBatch := f.(*transport.Batch)
	start := 0
	if isBatch {
		buf = buf[:0]
		if seqd {
			buf = binary.AppendUvarint(buf, seq)
			start = len(buf)
		}
		buf, raw, err = s.enc.AppendBatch(buf, b)
		if err == nil && s.c.maxBatch > 0 && int64(raw) > s.c.maxBatch {
			err = fmt.Errorf("%d raw bytes exceed the peer's MaxBatchBytes of %d", raw, s.c.maxBatch)
		}
		if err != nil {
			s.recycle(buf)
			return fmt.Errorf("send batch %s/%d seq %d: %w", b.Topic, b.Partition, b.Seq, err)
		}
	} else {
		buf, err = s.enc.AppendFrame(buf[:0], f)
		if err != nil {
			s.recycle(buf)
			return fmt.Errorf("send %s: %w", transport.TypeOf(f), err)
		}
	}
	select {
	case s.q <- buf:
	default:
		if isBatch {
			s.c.sendWaits.Add(1)
		}
		select {
		case s.q <- buf:
		case <-ctx.Done():
			s.recycle(buf)
			return ctx.Err()
		case <-s.c.ctx.Done():
			return s.c.Err()
		}
	}
	s.c.framesSent.Add(1)
	s.c.wireBytes.Add(int64(len(buf)))
	if isBatch {
		b.WireSize = len(buf) - start
		s.c.rawBytes.Add(int64(raw))
	}
	return nil
}

func (s *sender) recycle(buf []byte) {
	if buf == nil || cap(buf) > 4<<20 {
		return
	}
	select {
	case s.free <- buf[:0]:
	default:
	}
}

// run writes queued frames until the session ends, then flushes what is
// still queued (bounded by the write deadline the supervisor sets).
func (s *sender) run() {
	defer s.c.writers.Done()
	for {
		select {
		case buf := <-s.q:
			if !s.write(buf) {
				return
			}
			s.recycle(buf)
		case <-s.c.ctx.Done():
			for {
				select {
				case buf := <-s.q:
					if !s.write(buf) {
						return
					}
				default:
					return
				}
			}
		}
	}
}

func (s *sender) write(buf []byte) bool {
	if _, err := s.stream.Write(buf); err != nil {
		s.broken.Store(true)
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			werr := s.c.connErr(err)
			if s.st != nil {
				werr = s.c.stripeErr(s.st, err)
			}
			s.c.end(fmt.Errorf("write %s: %w", s.name, werr), nil, 0, "")
		}
		return false
	}
	if s.st != nil {
		s.c.batchBytes.Add(int64(len(buf)))
		s.st.batchBytes.Add(int64(len(buf)))
	}
	return true
}
