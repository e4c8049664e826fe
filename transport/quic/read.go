package quic

// The receive side of a session: the control stream's reader, the lane
// acceptor and lane readers, and the pinger.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/meridian-gw/meridian/transport"
)

// deliver hands a received frame to Recv, waiting while its queue is full
// until the session stops reading.
func (c *Conn) deliver(ch chan transport.Frame, f transport.Frame) bool {
	select {
	case ch <- f:
		return true
	case <-c.stopRead:
		return false
	}
}

func (c *Conn) readControl() {
	defer c.wg.Done()
	defer c.readers.done()
	goaway := ""
	for {
		f, err := c.ctlDec.ReadFrame(c.ctlReader)
		if err == io.EOF && c.ctx.Err() == nil {
			// The peer finished its side of the session: nothing more
			// follows. Let its lanes drain (briefly) before ending.
			timer := time.NewTimer(closeGrace)
			c.readers.wait(1, c.ctx.Done(), timer.C)
			timer.Stop()
			if goaway == "" {
				goaway = "closed its control stream"
			}
			c.end(&goneError{peer: c.peerDesc(), reason: goaway}, nil, 0, "")
			return
		}
		if err != nil {
			c.readFailed(c.first, "control stream", err)
			return
		}
		c.framesRecvd.Add(1)
		switch f := f.(type) {
		case *transport.Ping:
			// Answered inline: a peer that floods pings is held back by
			// the control queue, not buffered without bound. Once the
			// session is ending, pings go unanswered.
			c.ctl.send(c.ctx, &transport.Pong{Nonce: f.Nonce, SentAt: f.SentAt}, 0, false)
		case *transport.Pong:
			if sample := time.Now().UnixNano() - f.SentAt; sample > 0 {
				old := c.pingRTT.Load()
				if old == 0 {
					c.pingRTT.Store(sample)
				} else {
					c.pingRTT.Store(old + (sample-old)/8)
				}
			}
		case *transport.Hello, *transport.Welcome:
			c.protocolViolation(fmt.Sprintf("unexpected %s after the handshake", transport.TypeOf(f)))
			return
		case *transport.Batch:
			c.protocolViolation("batch on the control stream")
			return
		case *transport.Dict:
			// Stored before the ack leaves: no batch can name it before
			// the lane decoders can find it.
			if err := c.rxDicts.Add(f); err != nil {
				c.protocolViolation(err.Error())
				return
			}
			c.ctl.send(c.ctx, &transport.DictAck{ID: f.ID}, 0, false)
		case *transport.DictAck:
			if c.txDicts == nil {
				c.protocolViolation(fmt.Sprintf("ack of dictionary %d, which was never sent", f.ID))
				return
			}
			if err := c.txDicts.Ack(f.ID); err != nil {
				c.protocolViolation(err.Error())
				return
			}
		case *transport.Error:
			select {
			case c.recvCtl <- f:
			default:
			}
			c.end(fmt.Errorf("%s: %w", c.peerDesc(), f), nil, 0, "")
			return
		default:
			if g, ok := f.(*transport.Goaway); ok {
				goaway = g.Reason
			}
			if !c.deliver(c.recvCtl, f) {
				return
			}
		}
	}
}

// acceptLanes accepts the peer's lanes on stripe st and starts a reader for
// each. It returns when the stripe's connection ends; unless the peer
// retired the stripe, that ends the session.
func (c *Conn) acceptLanes(st *stripe) {
	defer c.wg.Done()
	for {
		rs, err := st.qc.AcceptUniStream(c.ctx)
		if err != nil {
			switch {
			case c.ctx.Err() != nil:
			case st.idx > 0 && retired(st.qc, err):
				c.dropStripe(st)
			default:
				c.end(c.stripeErr(st, err), nil, 0, "")
			}
			return
		}
		c.wg.Add(1)
		c.readers.add()
		go c.readLane(st, rs)
	}
}

func (c *Conn) readLane(st *stripe, rs *quicgo.ReceiveStream) {
	defer c.wg.Done()
	defer c.readers.done()
	name := fmt.Sprintf("lane %d", rs.StreamID())
	if st.idx > 0 {
		name = fmt.Sprintf("stripe %d lane %d", st.idx, rs.StreamID())
	}
	br := bufio.NewReaderSize(&countingReader{r: rs, n: &c.wireBytes}, readBufSize)
	kind, err := br.ReadByte()
	if err != nil {
		if !errors.Is(err, io.EOF) {
			c.readFailed(st, name, err)
		}
		return
	}
	switch {
	case kind == streamKindLane && !c.striped, kind == streamKindSeqLane && c.striped:
	default:
		c.protocolViolation(fmt.Sprintf("unexpected stream kind 0x%02x on %s (ALPN %s)", kind, name, c.alpn()))
		return
	}
	seqd := kind == streamKindSeqLane
	dec := transport.NewDecoder(c.cfg.limits)
	if err := dec.SetVersion(c.welcome.Version); err != nil {
		c.protocolViolation(err.Error()) // cannot happen: the handshake checked the version
		return
	}
	dec.SetDicts(c.rxDicts)
	defer dec.Close()
	for {
		var seq uint64
		var f transport.Frame
		if seqd {
			seq, f, err = readSeqFrame(br, dec)
		} else {
			f, err = dec.ReadFrame(br)
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				c.readFailed(st, name, err)
			}
			return
		}
		b, ok := f.(*transport.Batch)
		if !ok {
			c.protocolViolation(fmt.Sprintf("%s frame on %s (only batches travel on lanes)", transport.TypeOf(f), name))
			return
		}
		c.framesRecvd.Add(1)
		raw := int64(b.RawSize())
		c.rawBytes.Add(raw)
		if !seqd {
			if !c.deliver(c.recvData, b) {
				return
			}
			continue
		}
		if err := c.reo.push(b, seq, raw, c.deliverBatch); err != nil {
			c.protocolViolation(fmt.Sprintf("%s: %v", name, err))
			return
		}
	}
}

// readSeqFrame reads one record of a sequenced lane: a uvarint sequence
// number, then a frame. It returns io.EOF if br ends cleanly before the
// sequence number, io.ErrUnexpectedEOF if it ends after it.
func readSeqFrame(br *bufio.Reader, dec *transport.Decoder) (uint64, transport.Frame, error) {
	seq, err := readUvarint(br)
	if err != nil {
		return 0, nil, err
	}
	f, err := dec.ReadFrame(br)
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF // a sequence number without its batch
	}
	return seq, f, err
}

// readUvarint reads a uvarint as binary.ReadUvarint does, but tells the
// errors apart: io.EOF before the first byte, io.ErrUnexpectedEOF inside
// it, read errors as they are, and one wrapping transport.ErrMalformed if
// it overflows 64 bits.
func readUvarint(br *bufio.Reader) (uint64, error) {
	var x uint64
	for i := range binary.MaxVarintLen64 {
		b, err := br.ReadByte()
		if err != nil {
			if i > 0 && errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return 0, err
		}
		if b < 0x80 {
			if i == binary.MaxVarintLen64-1 && b > 1 {
				break
			}
			return x | uint64(b)<<(7*i), nil
		}
		x |= uint64(b&0x7f) << (7 * i)
	}
	return 0, fmt.Errorf("%w: sequence number overflows 64 bits", transport.ErrMalformed)
}

// deliverBatch hands an in-order batch to Recv; false once the session
// stops reading.
func (c *Conn) deliverBatch(b *transport.Batch) bool { return c.deliver(c.recvData, b) }

// pinger sends a Ping every ping period.
func (c *Conn) pinger() {
	defer c.wg.Done()
	if c.cfg.pingPeriod <= 0 {
		return
	}
	t := time.NewTicker(c.cfg.pingPeriod)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
			p := &transport.Ping{Nonce: c.pingNonce.Add(1), SentAt: time.Now().UnixNano()}
			if err := c.ctl.send(c.ctx, p, 0, false); err != nil {
				return
			}
		}
	}
}

// countingReader counts the bytes read through it into n.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (r *countingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.n.Add(int64(n))
	return n, err
}

// readerSet counts the readers still reading, for waits with a deadline.
type readerSet struct {
	mu      sync.Mutex
	n       int
	changed chan struct{} // closed and replaced on every change
}

func (r *readerSet) add() {
	r.mu.Lock()
	r.n++
	r.mu.Unlock()
}

func (r *readerSet) done() {
	r.mu.Lock()
	r.n--
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

// wait waits until at most n readers remain, stop is closed or timeout
// fires; it reports whether the count was reached.
func (r *readerSet) wait(n int, stop <-chan struct{}, timeout <-chan time.Time) bool {
	for {
		r.mu.Lock()
		if r.n <= n {
			r.mu.Unlock()
			return true
		}
		ch := r.changed
		r.mu.Unlock()
		select {
		case <-ch:
		case <-stop:
			return false
		case <-timeout:
			return false
		}
	}
}
