package chaos

import (
	"sync"
	"sync/atomic"
	"time"
)

// Pipe is one direction of an emulated link for any carrier that moves
// whole packets. Forward runs each packet through the Impairment; a packet
// due at once is sent by the caller, the rest wait in a heap ordered by
// delivery time, and Run, the pipe's delivery loop, sends them when due. The
// UDP proxy uses one Pipe per direction, with T the client a datagram
// belongs to; the packet lab (package chaos/netlab) uses one per link
// direction. T is whatever send needs besides the bytes.
//
// Delivery order follows the Impairment: a packet never overtakes one that
// is due earlier, except that reordered packets are overtaken on purpose.
// A packet due at once is sent directly only while nothing due is waiting
// or being sent by Run; otherwise it queues behind them.
//
// A Pipe is safe for concurrent use. Its lock is a leaf: it is never held
// while calling send or the Impairment.
type Pipe[T any] struct {
	im    *Impairment
	send  func(to T, b []byte) error
	base  time.Time // origin of the heap's int64 times
	stats dirCounters

	mu      sync.Mutex
	heap    packetHeap[T]
	seq     uint64
	sending int   // packets Run has taken from the heap and not yet sent
	w       waker // Run's; nil until Run starts
}

// maxInFlight caps the packets scheduled per pipe, so that a flood through
// a long unlimited-rate link cannot exhaust memory.
const maxInFlight = 1 << 18

// NewPipe returns a pipe through im that delivers packets with send. send is
// called by Forward's callers (for packets due at once) and by Run, so it
// must be safe for concurrent use; it must not keep b. An error from send
// counts as an error drop.
func NewPipe[T any](im *Impairment, send func(to T, b []byte) error) *Pipe[T] {
	return &Pipe[T]{im: im, send: send, base: time.Now()}
}

// Impairment is the link model of the pipe.
func (p *Pipe[T]) Impairment() *Impairment { return p.im }

// Forward runs one packet through the impairment, charging it size bytes
// (the whole packet on the emulated link), and sends b to to now or
// schedules a copy of it. It never keeps b.
func (p *Pipe[T]) Forward(to T, b []byte, size int) {
	now := time.Now()
	dec := p.im.Decide(now, size)
	p.stats.received.Add(1)
	if dec.Copies == 0 {
		p.stats.drop(dec.Drop)
		return
	}
	if dec.Copies == 2 {
		p.stats.duplicated.Add(1)
	}
	if dec.Reordered {
		p.stats.reordered.Add(1)
	}
	nowN := int64(now.Sub(p.base))
	for _, at := range dec.Times() {
		p.schedule(nowN, int64(at.Sub(p.base)), to, b)
	}
}

// DropError counts a packet that the carrier received for this pipe but
// could not hand to it (for example because no upstream socket could be
// opened).
func (p *Pipe[T]) DropError() {
	p.stats.received.Add(1)
	p.stats.drops.Error.Add(1)
}

// schedule sends b now if it is due and nothing due is ahead of it, or
// queues a pooled copy for Run.
func (p *Pipe[T]) schedule(now, at int64, to T, b []byte) {
	p.mu.Lock()
	if at <= now && p.sending == 0 && (len(p.heap) == 0 || p.heap[0].at > now) {
		p.mu.Unlock()
		p.deliver(to, b)
		return
	}
	if len(p.heap) >= maxInFlight {
		p.mu.Unlock()
		p.stats.drops.Queue.Add(1)
		return
	}
	p.seq++
	p.heap.push(packet[T]{at: at, seq: p.seq, buf: getBuf(b), to: to})
	if p.heap[0].seq == p.seq && p.w != nil {
		p.w.kick() // it is due before what Run sleeps for
	}
	p.mu.Unlock()
}

func (p *Pipe[T]) deliver(to T, b []byte) {
	if err := p.send(to, b); err != nil {
		p.stats.drops.Error.Add(1)
		return
	}
	p.stats.packets.Add(1)
	p.stats.bytes.Add(uint64(len(b)))
}

// Run is the pipe's delivery loop: it sends scheduled packets when they are
// due, sleeping until the earliest and waking early when an earlier one is
// scheduled. On Linux it sleeps on a timerfd, so deliveries are tens of
// microseconds late rather than up to the millisecond of a runtime timer.
// Packets due during a blackout are dropped, so nothing arrives while the
// link is dark, not even packets sent before it began. Run returns when
// quit is closed, discarding what is still scheduled. Run it once, in a
// goroutine the carrier waits for; it waits for the one helper goroutine it
// starts.
func (p *Pipe[T]) Run(quit <-chan struct{}) {
	w := newWaker()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		<-quit
		w.close()
	})
	p.mu.Lock()
	p.w = w
	p.mu.Unlock()

	var batch []packet[T]
	for {
		now := int64(time.Since(p.base))
		p.mu.Lock()
		for len(p.heap) > 0 && p.heap[0].at <= now {
			batch = append(batch, p.heap.pop())
		}
		p.sending = len(batch)
		if len(batch) == 0 {
			// Armed under the lock, so that a kick for an earlier packet
			// is never overwritten by an older plan.
			if len(p.heap) > 0 {
				w.arm(time.Duration(p.heap[0].at - now))
			} else {
				w.arm(-1)
			}
		}
		p.mu.Unlock()

		if len(batch) > 0 {
			blackout := p.im.BlackedOut(p.base.Add(time.Duration(now)))
			for i := range batch {
				pk := &batch[i]
				if blackout {
					p.stats.drops.Blackout.Add(1)
				} else {
					p.deliver(pk.to, *pk.buf)
				}
				putBuf(pk.buf)
				*pk = packet[T]{}
			}
			batch = batch[:0]
			p.mu.Lock()
			p.sending = 0
			p.mu.Unlock()
			continue // time has passed; look again before sleeping
		}

		if !w.wait() {
			p.mu.Lock()
			for _, pk := range p.heap {
				putBuf(pk.buf)
			}
			p.heap, p.w = nil, nil
			p.mu.Unlock()
			return
		}
	}
}

// Stats returns a snapshot of the pipe's counters.
func (p *Pipe[T]) Stats() DirStats {
	p.mu.Lock()
	inFlight := len(p.heap) + p.sending
	p.mu.Unlock()
	c := &p.stats
	return DirStats{
		InFlight:   inFlight,
		Received:   c.received.Load(),
		Packets:    c.packets.Load(),
		Bytes:      c.bytes.Load(),
		Duplicated: c.duplicated.Load(),
		Reordered:  c.reordered.Load(),
		Dropped: DropCounts{
			Loss:     c.drops.Loss.Load(),
			Queue:    c.drops.Queue.Load(),
			Blackout: c.drops.Blackout.Load(),
			MTU:      c.drops.MTU.Load(),
			Error:    c.drops.Error.Load(),
		},
	}
}

// DirStats counts one direction of a link.
type DirStats struct {
	Received   uint64     // packets that entered the direction
	InFlight   int        // packets scheduled and not yet delivered
	Packets    uint64     // packets delivered, duplicates included
	Bytes      uint64     // bytes delivered: UDP payloads for the proxy, whole IP packets for the lab
	Duplicated uint64     // packets delivered twice
	Reordered  uint64     // packets held back to be overtaken
	Dropped    DropCounts // packets not delivered, by reason
}

// DropCounts counts dropped packets by reason.
type DropCounts struct {
	Loss     uint64 // random, bursty or event loss
	Queue    uint64 // bottleneck queue full, or too many packets in flight
	Blackout uint64 // link blacked out
	MTU      uint64 // larger than the MTU
	Error    uint64 // the send failed (peer gone, socket or device closed, port unreachable)
}

// Total is the sum of all reasons.
func (d DropCounts) Total() uint64 { return d.Loss + d.Queue + d.Blackout + d.MTU + d.Error }

type dirCounters struct {
	received, packets, bytes, duplicated, reordered atomic.Uint64
	drops                                           struct{ Loss, Queue, Blackout, MTU, Error atomic.Uint64 }
}

func (c *dirCounters) drop(r DropReason) {
	switch r {
	case DropLoss:
		c.drops.Loss.Add(1)
	case DropQueue:
		c.drops.Queue.Add(1)
	case DropBlackout:
		c.drops.Blackout.Add(1)
	case DropMTU:
		c.drops.MTU.Add(1)
	default:
		c.drops.Error.Add(1)
	}
}

// packet is a copy of a packet waiting for its delivery time.
type packet[T any] struct {
	at  int64 // time since Pipe.base when due
	seq uint64
	buf *[]byte // pooled copy
	to  T
}

// packetHeap is a min-heap on (at, seq), so equal times keep arrival order.
type packetHeap[T any] []packet[T]

func (h packetHeap[T]) less(i, j int) bool {
	if h[i].at != h[j].at {
		return h[i].at < h[j].at
	}
	return h[i].seq < h[j].seq
}

func (h *packetHeap[T]) push(p packet[T]) {
	*h = append(*h, p)
	s := *h
	for i := len(s) - 1; i > 0; {
		parent := (i - 1) / 2
		if !s.less(i, parent) {
			break
		}
		s[i], s[parent] = s[parent], s[i]
		i = parent
	}
}

func (h *packetHeap[T]) pop() packet[T] {
	s := *h
	top := s[0]
	n := len(s) - 1
	s[0] = s[n]
	s[n] = packet[T]{}
	s = s[:n]
	for i := 0; ; {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && s.less(r, l) {
			m = r
		}
		if !s.less(m, i) {
			break
		}
		s[i], s[m] = s[m], s[i]
		i = m
	}
	*h = s
	return top
}

// Buffers for scheduled packets come from pools by size class, so that
// neither an Ethernet-sized nor a jumbo or GSO-sized packet costs an
// allocation in the steady state.
var bufClasses = [...]int{2 << 10, 16 << 10, 64 << 10}

var bufPools [len(bufClasses)]sync.Pool

func getBuf(b []byte) *[]byte {
	for i, size := range bufClasses {
		if len(b) <= size {
			bp, _ := bufPools[i].Get().(*[]byte)
			if bp == nil {
				s := make([]byte, 0, size)
				bp = &s
			}
			*bp = append((*bp)[:0], b...)
			return bp
		}
	}
	s := append([]byte(nil), b...)
	return &s
}

func putBuf(bp *[]byte) {
	for i, size := range bufClasses {
		if cap(*bp) == size {
			bufPools[i].Put(bp)
			return
		}
	}
}
