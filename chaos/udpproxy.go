package chaos

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// UDPProxyOptions configure a UDPProxy.
type UDPProxyOptions struct {
	// Listen is the UDP address clients send to. "" = "127.0.0.1:0".
	Listen string
	// Target is the real server's UDP address (host:port). Required.
	Target string
	// Profile is the link to emulate. nil = no impairment (but blackouts
	// still work).
	Profile *Profile
	// Seed seeds the impairments. 0 = pick one at random; UDPProxy.Seed
	// returns it either way, so a failing test can print it.
	Seed uint64
	// IdleTimeout forgets a client, and closes its upstream socket, after
	// this long without a packet either way. 0 = 2 minutes.
	IdleTimeout time.Duration
	// Logger receives lifecycle and error logs. nil = discard.
	Logger *slog.Logger
}

// UDPProxy is a user-space link emulator for UDP, and so for QUIC: clients
// send to Addr, and for each client address the proxy opens a fresh
// upstream socket to the target, so the server sees one peer per client.
// Packets cross one Impairment per direction (Up: client -> target,
// Down: target -> client), shared by all clients as one link, and are
// delivered by a timer-driven scheduler per direction.
//
// Rates and MTU count IP packets: each payload is charged 28 bytes of IPv4
// and UDP header (48 for IPv6). Scheduled events are timed from
// NewUDPProxy.
type UDPProxy struct {
	log      *slog.Logger
	lc       *net.UDPConn
	target   *net.UDPAddr
	overhead int
	seed     uint64
	base     time.Time // monotonic origin of packet times
	idle     time.Duration
	up, down *direction
	quit     chan struct{}
	wg       sync.WaitGroup

	closeOnce sync.Once
	closeErr  error

	mu      sync.Mutex
	closed  bool
	clients map[netip.AddrPort]*client
	profile *Profile
	total   uint64 // clients ever seen

	dialErrs atomic.Uint64 // failures to open an upstream socket
}

// ProxyStats is a snapshot of a proxy's counters.
type ProxyStats struct {
	Up           DirStats // client -> target
	Down         DirStats // target -> client
	Clients      int      // clients currently known
	ClientsTotal uint64   // clients ever seen
}

// DirStats counts one direction.
type DirStats struct {
	Received   uint64     // packets that entered the direction
	InFlight   int        // packets scheduled and not yet delivered
	Packets    uint64     // packets delivered, duplicates included
	Bytes      uint64     // payload bytes delivered
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
	Error    uint64 // the send failed (client gone, socket closed, port unreachable)
}

// Total is the sum of all reasons.
func (d DropCounts) Total() uint64 { return d.Loss + d.Queue + d.Blackout + d.MTU + d.Error }

const (
	defaultIdleTimeout = 2 * time.Minute
	maxDatagram        = 64 << 10
	smallBuf           = 2048
	// maxInFlight caps the packets scheduled per direction, so that a flood
	// through a long unlimited-rate link cannot exhaust memory.
	maxInFlight = 1 << 18
)

// NewUDPProxy starts a proxy. Close it to stop it.
func NewUDPProxy(opts UDPProxyOptions) (*UDPProxy, error) {
	if opts.Target == "" {
		return nil, errors.New("new udp proxy: target is required")
	}
	target, err := net.ResolveUDPAddr("udp", opts.Target)
	if err != nil {
		return nil, fmt.Errorf("new udp proxy: target: %w", err)
	}
	listen := opts.Listen
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	laddr, err := net.ResolveUDPAddr("udp", listen)
	if err != nil {
		return nil, fmt.Errorf("new udp proxy: listen: %w", err)
	}
	seed := opts.Seed
	for seed == 0 {
		seed = rand.Uint64()
	}
	base := time.Now()
	up, err := NewImpairment(opts.Profile, Up, seed, base)
	if err != nil {
		return nil, fmt.Errorf("new udp proxy: %w", err)
	}
	down, err := NewImpairment(opts.Profile, Down, seed, base)
	if err != nil {
		return nil, fmt.Errorf("new udp proxy: %w", err)
	}
	lc, err := net.ListenUDP("udp", laddr)
	if err != nil {
		return nil, fmt.Errorf("new udp proxy: %w", err)
	}
	_ = lc.SetReadBuffer(4 << 20) // best effort; the kernel may cap it
	_ = lc.SetWriteBuffer(4 << 20)

	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "chaos.udpproxy", "listen", lc.LocalAddr().String(), "target", target.String())

	px := &UDPProxy{
		log:      log,
		lc:       lc,
		target:   target,
		overhead: 28,
		seed:     seed,
		base:     base,
		idle:     opts.IdleTimeout,
		up:       newDirection(up),
		down:     newDirection(down),
		quit:     make(chan struct{}),
		clients:  map[netip.AddrPort]*client{},
	}
	if opts.Profile != nil {
		px.profile = opts.Profile.Clone()
	}
	if target.IP.To4() == nil {
		px.overhead = 48
	}
	if px.idle <= 0 {
		px.idle = defaultIdleTimeout
	}
	px.up.send = func(cl *client, b []byte) error { _, err := cl.conn.Write(b); return err }
	px.down.send = func(cl *client, b []byte) error { _, err := px.lc.WriteToUDPAddrPort(b, cl.addr); return err }

	px.wg.Go(px.readClients)
	px.wg.Go(func() { px.deliverLoop(px.up) })
	px.wg.Go(func() { px.deliverLoop(px.down) })
	px.wg.Go(px.expireLoop)
	log.Info("udp proxy started", "profile", opts.Profile.String(), "seed", seed)
	return px, nil
}

// Addr is the address clients send to.
func (px *UDPProxy) Addr() *net.UDPAddr { return px.lc.LocalAddr().(*net.UDPAddr) }

// Seed is the seed of the impairments.
func (px *UDPProxy) Seed() uint64 { return px.seed }

// Profile is the profile in force (nil = none).
func (px *UDPProxy) Profile() *Profile {
	px.mu.Lock()
	defer px.mu.Unlock()
	return px.profile
}

// SetProfile changes the emulated link from now on (nil = no impairment).
// Packets already scheduled keep their delivery times.
func (px *UDPProxy) SetProfile(p *Profile) error {
	if p != nil {
		if err := p.Validate(); err != nil {
			return fmt.Errorf("set profile: %w", err)
		}
	}
	px.mu.Lock()
	defer px.mu.Unlock()
	if err := px.up.im.SetProfile(p); err != nil {
		return fmt.Errorf("set profile: %w", err)
	}
	if err := px.down.im.SetProfile(p); err != nil {
		return fmt.Errorf("set profile: %w", err)
	}
	if p != nil {
		p = p.Clone()
	}
	px.profile = p
	px.log.Info("udp proxy profile changed", "profile", p.String())
	return nil
}

// SetBlackout starts (true) or ends (false) a blackout of both directions:
// while it lasts nothing is delivered either way, including packets that
// were already in flight. Ending it also ends a Blackout(d) in progress.
func (px *UDPProxy) SetBlackout(on bool) {
	px.up.im.SetBlackout(on)
	px.down.im.SetBlackout(on)
	px.log.Info("udp proxy blackout", "on", on)
}

// Blackout blacks out both directions for d, from now, and returns at once.
func (px *UDPProxy) Blackout(d time.Duration) {
	if d <= 0 {
		return
	}
	until := time.Now().Add(d)
	px.up.im.BlackoutUntil(until)
	px.down.im.BlackoutUntil(until)
	px.log.Info("udp proxy blackout", "for", d)
}

// Stats returns a snapshot of the counters.
func (px *UDPProxy) Stats() ProxyStats {
	px.mu.Lock()
	n, total := len(px.clients), px.total
	px.mu.Unlock()
	return ProxyStats{Up: px.up.snapshot(), Down: px.down.snapshot(), Clients: n, ClientsTotal: total}
}

// Close stops the proxy, closes every socket it opened and returns once all
// its goroutines have finished. Packets still scheduled are discarded. It
// may be called more than once; later calls wait for the first and return
// its result.
func (px *UDPProxy) Close() error {
	px.closeOnce.Do(func() {
		px.mu.Lock()
		px.closed = true
		clients := px.clients
		px.clients = nil
		px.mu.Unlock()

		px.closeErr = px.lc.Close()
		close(px.quit)
		for _, cl := range clients {
			cl.close()
		}
		px.wg.Wait()
		px.log.Info("udp proxy closed")
	})
	return px.closeErr
}

// nanotime is the monotonic time since px.base.
func (px *UDPProxy) nanotime() int64 { return int64(time.Since(px.base)) }

type client struct {
	addr   netip.AddrPort
	conn   *net.UDPConn // connected to the target
	last   atomic.Int64 // nanotime of the last packet either way
	closed atomic.Bool
}

func (cl *client) close() {
	if cl.closed.CompareAndSwap(false, true) {
		cl.conn.Close()
	}
}

// clientFor returns the client for addr, opening its upstream socket and
// starting its reader on first sight.
func (px *UDPProxy) clientFor(addr netip.AddrPort) (*client, error) {
	px.mu.Lock()
	defer px.mu.Unlock()
	if px.closed {
		return nil, net.ErrClosed
	}
	if cl, ok := px.clients[addr]; ok {
		return cl, nil
	}
	conn, err := net.DialUDP("udp", nil, px.target)
	if err != nil {
		return nil, fmt.Errorf("dial target: %w", err)
	}
	_ = conn.SetReadBuffer(1 << 20)
	_ = conn.SetWriteBuffer(1 << 20)
	cl := &client{addr: addr, conn: conn}
	cl.last.Store(px.nanotime())
	px.clients[addr] = cl
	px.total++
	px.wg.Go(func() { px.readTarget(cl) })
	px.log.Debug("udp proxy new client", "client", addr.String(), "upstream", conn.LocalAddr().String())
	return cl, nil
}

// readClients reads what clients send and feeds the up direction.
func (px *UDPProxy) readClients() {
	buf := make([]byte, maxDatagram)
	var last *client
	var errs int
	for {
		n, addr, err := px.lc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if !px.backoff(&errs, "read from clients", err) {
				return
			}
			continue
		}
		errs = 0
		cl := last
		if cl == nil || cl.addr != addr || cl.closed.Load() {
			cl, err = px.clientFor(addr)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				px.up.stats.received.Add(1)
				px.up.stats.drops.Error.Add(1)
				if n := px.dialErrs.Add(1); n&(n-1) == 0 { // 1st, 2nd, 4th, 8th, ...
					px.log.Warn("udp proxy cannot open upstream socket", "client", addr.String(), "err", err, "failures", n)
				}
				continue
			}
			last = cl
		}
		cl.last.Store(px.nanotime())
		px.forward(px.up, cl, buf[:n])
	}
}

// readTarget reads what the target sends to one client and feeds the down
// direction. It returns when the client's socket is closed.
func (px *UDPProxy) readTarget(cl *client) {
	buf := make([]byte, maxDatagram)
	var errs int
	for {
		n, err := cl.conn.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || cl.closed.Load() {
				return
			}
			// A connected UDP socket reports ICMP port unreachable as
			// ECONNREFUSED on the next read; the server may come back.
			if !px.backoff(&errs, "read from target", err) {
				return
			}
			continue
		}
		errs = 0
		cl.last.Store(px.nanotime())
		px.forward(px.down, cl, buf[:n])
	}
}

// backoff logs a read error (the first at warn, the rest at debug) and
// pauses a little after repeated ones. It reports false if the proxy is
// closing.
func (px *UDPProxy) backoff(errs *int, op string, err error) bool {
	*errs++
	if *errs == 1 {
		px.log.Warn("udp proxy "+op, "err", err)
	} else {
		px.log.Debug("udp proxy "+op, "err", err, "consecutive", *errs)
	}
	if *errs < 3 {
		return true
	}
	t := time.NewTimer(time.Duration(min(*errs, 100)) * time.Millisecond)
	defer t.Stop()
	select {
	case <-px.quit:
		return false
	case <-t.C:
		return true
	}
}

// forward runs one packet through d's impairment and sends it now or
// schedules it.
func (px *UDPProxy) forward(d *direction, cl *client, payload []byte) {
	now := time.Now()
	dec := d.im.Decide(now, len(payload)+px.overhead)
	d.stats.received.Add(1)
	if dec.Copies == 0 {
		d.stats.drop(dec.Drop)
		return
	}
	if dec.Copies == 2 {
		d.stats.duplicated.Add(1)
	}
	if dec.Reordered {
		d.stats.reordered.Add(1)
	}
	for _, at := range dec.Times() {
		if !at.After(now) {
			d.deliver(cl, payload)
			continue
		}
		if !d.push(packet{at: int64(at.Sub(px.base)), payload: payload, cl: cl}) {
			d.stats.drops.Queue.Add(1)
		}
	}
}

// deliverLoop sends d's scheduled packets when they are due. It sleeps on a
// timer set to the earliest packet and wakes early when an earlier one is
// scheduled.
func (px *UDPProxy) deliverLoop(d *direction) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var batch []packet
	for {
		now := px.nanotime()
		d.mu.Lock()
		for len(d.heap) > 0 && d.heap[0].at <= now {
			batch = append(batch, d.heap.pop())
		}
		next := int64(-1)
		if len(d.heap) > 0 {
			next = d.heap[0].at
		}
		d.mu.Unlock()

		if len(batch) > 0 {
			blackout := d.im.BlackedOut(px.base.Add(time.Duration(now)))
			for i := range batch {
				p := &batch[i]
				if blackout {
					d.stats.drops.Blackout.Add(1)
				} else {
					d.deliver(p.cl, *p.buf)
				}
				putBuf(p.buf)
				*p = packet{}
			}
			batch = batch[:0]
			continue // time has passed; look again before sleeping
		}

		if next >= 0 {
			timer.Reset(time.Duration(next - now))
		}
		select {
		case <-px.quit:
			timer.Stop()
			d.mu.Lock()
			for _, p := range d.heap {
				putBuf(p.buf)
			}
			d.heap = nil
			d.mu.Unlock()
			return
		case <-d.wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// direction is one way through the proxy.
type direction struct {
	im    *Impairment
	send  func(cl *client, b []byte) error
	stats dirCounters
	wake  chan struct{} // capacity 1: an earlier packet was scheduled

	mu   sync.Mutex
	heap packetHeap
	seq  uint64
}

func newDirection(im *Impairment) *direction {
	return &direction{im: im, wake: make(chan struct{}, 1)}
}

func (d *direction) deliver(cl *client, b []byte) {
	if cl.closed.Load() {
		d.stats.drops.Error.Add(1)
		return
	}
	if err := d.send(cl, b); err != nil {
		d.stats.drops.Error.Add(1)
		return
	}
	d.stats.packets.Add(1)
	d.stats.bytes.Add(uint64(len(b)))
}

// push schedules p, copying p.payload into a pooled buffer. It reports
// false if the direction has too many packets in flight.
func (d *direction) push(p packet) bool {
	d.mu.Lock()
	if len(d.heap) >= maxInFlight {
		d.mu.Unlock()
		return false
	}
	p.buf, p.payload = getBuf(p.payload), nil
	d.seq++
	p.seq = d.seq
	d.heap.push(p)
	first := d.heap[0].seq == p.seq
	d.mu.Unlock()
	if first {
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
	return true
}

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

func (d *direction) snapshot() DirStats {
	d.mu.Lock()
	inFlight := len(d.heap)
	d.mu.Unlock()
	c := &d.stats
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

// packet is a datagram waiting for its delivery time.
type packet struct {
	at      int64 // nanotime when due
	seq     uint64
	buf     *[]byte // pooled copy of the datagram
	payload []byte  // the caller's datagram, until push copies it
	cl      *client
}

// packetHeap is a min-heap on (at, seq), so equal times keep arrival order.
type packetHeap []packet

func (h packetHeap) less(i, j int) bool {
	if h[i].at != h[j].at {
		return h[i].at < h[j].at
	}
	return h[i].seq < h[j].seq
}

func (h *packetHeap) push(p packet) {
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

func (h *packetHeap) pop() packet {
	s := *h
	top := s[0]
	n := len(s) - 1
	s[0] = s[n]
	s[n] = packet{}
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

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, smallBuf); return &b }}

func getBuf(payload []byte) *[]byte {
	if len(payload) > smallBuf {
		b := append([]byte(nil), payload...)
		return &b
	}
	b := bufPool.Get().(*[]byte)
	*b = append((*b)[:0], payload...)
	return b
}

func putBuf(b *[]byte) {
	if cap(*b) == smallBuf {
		bufPool.Put(b)
	}
}

// expireLoop forgets idle clients.
func (px *UDPProxy) expireLoop() {
	every := min(max(px.idle/4, 10*time.Millisecond), 5*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-px.quit:
			return
		case <-t.C:
			px.expire()
		}
	}
}

func (px *UDPProxy) expire() {
	cutoff := px.nanotime() - int64(px.idle)
	var gone []*client
	px.mu.Lock()
	for addr, cl := range px.clients {
		if cl.last.Load() < cutoff {
			delete(px.clients, addr)
			gone = append(gone, cl)
		}
	}
	px.mu.Unlock()
	for _, cl := range gone {
		cl.close()
		px.log.Debug("udp proxy client expired", "client", cl.addr.String())
	}
}
