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
// delivered by a timer-driven scheduler per direction (a Pipe).
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
	up, down *Pipe[*client]
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

const (
	defaultIdleTimeout = 2 * time.Minute
	maxDatagram        = 64 << 10
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
	px.up = NewPipe(up, sendUp)
	px.down = NewPipe(down, px.sendDown)

	px.wg.Go(px.readClients)
	px.wg.Go(func() { px.up.Run(px.quit) })
	px.wg.Go(func() { px.down.Run(px.quit) })
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
	if err := px.up.Impairment().SetProfile(p); err != nil {
		return fmt.Errorf("set profile: %w", err)
	}
	if err := px.down.Impairment().SetProfile(p); err != nil {
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
	px.up.Impairment().SetBlackout(on)
	px.down.Impairment().SetBlackout(on)
	px.log.Info("udp proxy blackout", "on", on)
}

// Blackout blacks out both directions for d, from now, and returns at once.
func (px *UDPProxy) Blackout(d time.Duration) {
	if d <= 0 {
		return
	}
	until := time.Now().Add(d)
	px.up.Impairment().BlackoutUntil(until)
	px.down.Impairment().BlackoutUntil(until)
	px.log.Info("udp proxy blackout", "for", d)
}

// Stats returns a snapshot of the counters.
func (px *UDPProxy) Stats() ProxyStats {
	px.mu.Lock()
	n, total := len(px.clients), px.total
	px.mu.Unlock()
	return ProxyStats{Up: px.up.Stats(), Down: px.down.Stats(), Clients: n, ClientsTotal: total}
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
				px.up.DropError()
				if n := px.dialErrs.Add(1); n&(n-1) == 0 { // 1st, 2nd, 4th, 8th, ...
					px.log.Warn("udp proxy cannot open upstream socket", "client", addr.String(), "err", err, "failures", n)
				}
				continue
			}
			last = cl
		}
		cl.last.Store(px.nanotime())
		px.up.Forward(cl, buf[:n], n+px.overhead)
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
		px.down.Forward(cl, buf[:n], n+px.overhead)
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

// sendUp and sendDown deliver a datagram of one client each way.
func sendUp(cl *client, b []byte) error {
	if cl.closed.Load() {
		return net.ErrClosed
	}
	_, err := cl.conn.Write(b)
	return err
}

func (px *UDPProxy) sendDown(cl *client, b []byte) error {
	if cl.closed.Load() {
		return net.ErrClosed
	}
	_, err := px.lc.WriteToUDPAddrPort(b, cl.addr)
	return err
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
