package quic

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	quicgo "github.com/quic-go/quic-go"
)

// ALPNGossip is the ALPN of gossip connections.
const ALPNGossip = "meridian-gossip/1"

// Stream kinds of a gossip connection: the first byte of each stream.
const (
	gossipKindPacket byte = 'p' // one packet too big for a datagram: uvarint length, bytes
	gossipKindStream byte = 's' // a memberlist stream (push/pull, fallback probes)
)

// gossipPacketMax is the largest packet accepted on a packet stream:
// memberlist's packets stay far below it.
const gossipPacketMax = 64 << 10

// GossipOptions configure a Gossip transport.
type GossipOptions struct {
	// ServerTLS and ClientTLS are the gateway's link mTLS configs (as for
	// Listen and NewDialer); both required. ClientTLS's ServerName is set
	// to each peer's name when dialling it.
	ServerTLS, ClientTLS *tls.Config
	// Member reports whether a certificate name belongs to the fleet; a
	// peer whose certificate the CA signed but that Member refuses is
	// refused (logged and counted in Refused). nil: any name.
	Member func(name string) bool
	// PacketConn, if set, is the UDP socket to use (it is not closed by
	// Shutdown); else Listen opens one at the address.
	PacketConn net.PacketConn
	// KeepAlive keeps idle connections (and the NAT bindings of sites that
	// dial out) alive; 0 = 10s. IdleTimeout ends a connection that hears
	// nothing; 0 = 60s. HandshakeTimeout; 0 = DefaultHandshakeTimeout.
	KeepAlive, IdleTimeout, HandshakeTimeout time.Duration
	// Dialable reports whether a peer can be dialled at all; a site behind
	// NAT that only dials out cannot, and is reached over the connection
	// it opened. nil: every peer.
	Dialable func(name string) bool
	// Logger; nil discards.
	Logger *slog.Logger
}

// GossipStats are a Gossip transport's counters.
type GossipStats struct {
	Refused       int64            // connections refused: not a member, or a name that does not match
	PacketsSent   int64            // as datagrams or packet streams
	PacketsRecv   int64            // as datagrams or packet streams
	Dropped       int64            // packets for a peer without a connection that could not get one
	BytesSent     map[string]int64 // packet and stream bytes, by peer
	BytesReceived map[string]int64 // packet and stream bytes, by peer
}

// Gossip is a memberlist transport (memberlist.NodeAwareTransport) over
// QUIC with the gateways' link certificates: packets travel as QUIC
// datagrams (a stream when one is too big for a datagram), streams as QUIC
// streams, and every byte is authenticated by mutual TLS. Connections are
// kept per peer name and used in both directions, so a site behind NAT that
// only dials out is reached over the connection it opened.
//
// Gossip has its own UDP socket and listener (ALPN "meridian-gossip/1"):
// a quic-go listener has one quic.Config for every ALPN, and the link
// listener's (one bidirectional stream, no datagrams) does not fit gossip.
type Gossip struct {
	opts   GossipOptions
	log    *slog.Logger
	qconf  *quicgo.Config
	server *tls.Config
	tr     *quicgo.Transport
	ln     *quicgo.Listener
	pc     net.PacketConn
	ownPC  bool

	packetCh chan *memberlist.Packet
	streamCh chan net.Conn

	ctx    context.Context // ends when Shutdown starts
	cancel context.CancelFunc
	wg     sync.WaitGroup // accept loop, handshakes, connection readers
	once   sync.Once

	refused, pktSent, pktRecv, dropped atomic.Int64

	mu     sync.Mutex
	conns  map[string]*gossipConn // by peer name: the newest connection
	byAddr map[string]*gossipConn // by remote UDP address
	all    map[*gossipConn]struct{}
	dials  map[string]chan struct{}
	sent   map[string]int64
	recv   map[string]int64
}

type gossipConn struct {
	qc   *quicgo.Conn
	peer string
}

var _ memberlist.NodeAwareTransport = (*Gossip)(nil)

// ListenGossip opens a Gossip transport listening on addr (UDP host:port;
// port 0 picks one) or on opts.PacketConn.
func ListenGossip(addr string, opts GossipOptions) (*Gossip, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "transport/quic", "side", "gossip")
	if opts.ClientTLS == nil {
		return nil, errors.New("quic gossip: GossipOptions.ClientTLS is nil: gossip uses mutual TLS")
	}
	server, err := serverTLS(opts.ServerTLS, log, []string{ALPNGossip})
	if err != nil {
		return nil, fmt.Errorf("quic gossip: %w", err)
	}
	if _, err := clientTLS(opts.ClientTLS, []string{ALPNGossip}); err != nil {
		return nil, fmt.Errorf("quic gossip: %w", err)
	}
	qconf := &quicgo.Config{
		HandshakeIdleTimeout:  orDefault(opts.HandshakeTimeout, DefaultHandshakeTimeout),
		MaxIdleTimeout:        orDefault(opts.IdleTimeout, 60*time.Second),
		KeepAlivePeriod:       orDefault(opts.KeepAlive, 10*time.Second),
		EnableDatagrams:       true,
		MaxIncomingStreams:    256,
		MaxIncomingUniStreams: 256,
	}
	pc, own := opts.PacketConn, false
	if pc == nil {
		ua, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			return nil, fmt.Errorf("quic gossip %s: %w", addr, err)
		}
		if pc, err = net.ListenUDP("udp", ua); err != nil {
			return nil, fmt.Errorf("quic gossip: %w", err)
		}
		own = true
	}
	tr := &quicgo.Transport{Conn: pc}
	ln, err := tr.Listen(server, qconf)
	if err != nil {
		tr.Close()
		if own {
			pc.Close()
		}
		return nil, fmt.Errorf("quic gossip %s: %w", pc.LocalAddr(), err)
	}
	g := &Gossip{
		opts: opts, log: log.With("addr", pc.LocalAddr().String()), qconf: qconf, server: server,
		tr: tr, ln: ln, pc: pc, ownPC: own,
		packetCh: make(chan *memberlist.Packet, 256),
		streamCh: make(chan net.Conn, 16),
		conns:    map[string]*gossipConn{}, byAddr: map[string]*gossipConn{}, all: map[*gossipConn]struct{}{},
		dials: map[string]chan struct{}{}, sent: map[string]int64{}, recv: map[string]int64{},
	}
	g.ctx, g.cancel = context.WithCancel(context.Background())
	g.wg.Go(g.acceptLoop)
	return g, nil
}

// Addr is the local UDP address.
func (g *Gossip) Addr() *net.UDPAddr { return g.pc.LocalAddr().(*net.UDPAddr) }

// Stats returns the transport's counters.
func (g *Gossip) Stats() GossipStats {
	s := GossipStats{Refused: g.refused.Load(), PacketsSent: g.pktSent.Load(), PacketsRecv: g.pktRecv.Load(), Dropped: g.dropped.Load(),
		BytesSent: map[string]int64{}, BytesReceived: map[string]int64{}}
	g.mu.Lock()
	defer g.mu.Unlock()
	for k, v := range g.sent {
		s.BytesSent[k] = v
	}
	for k, v := range g.recv {
		s.BytesReceived[k] = v
	}
	return s
}

// Peers returns the names of the peers with an open connection.
func (g *Gossip) Peers() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]string, 0, len(g.conns))
	for n := range g.conns {
		out = append(out, n)
	}
	return out
}

func (g *Gossip) countSent(peer string, n int) {
	g.mu.Lock()
	g.sent[peer] += int64(n)
	g.mu.Unlock()
}

func (g *Gossip) countRecv(peer string, n int) {
	g.mu.Lock()
	g.recv[peer] += int64(n)
	g.mu.Unlock()
}

// FinalAdvertiseAddr is the configured address, or the listening one.
func (g *Gossip) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	if ip != "" {
		a := net.ParseIP(ip)
		if a == nil {
			return nil, 0, fmt.Errorf("quic gossip: advertise address %q is not an IP address", ip)
		}
		if a4 := a.To4(); a4 != nil {
			a = a4
		}
		return a, port, nil
	}
	la := g.Addr()
	a := la.IP
	if a4 := a.To4(); a4 != nil {
		a = a4
	}
	if a.IsUnspecified() {
		return nil, 0, errors.New("quic gossip: listening on all interfaces: set the advertise address")
	}
	return a, la.Port, nil
}

// PacketCh delivers packets from peers.
func (g *Gossip) PacketCh() <-chan *memberlist.Packet { return g.packetCh }

// StreamCh delivers streams peers opened.
func (g *Gossip) StreamCh() <-chan net.Conn { return g.streamCh }

// WriteTo sends a packet to addr, over a connection already open to that
// address or a new one. Without a node name the peer cannot be checked, so
// prefer WriteToAddress.
func (g *Gossip) WriteTo(b []byte, addr string) (time.Time, error) {
	return g.WriteToAddress(b, memberlist.Address{Addr: addr})
}

// WriteToAddress sends a packet to the named peer: as a datagram on its
// connection, or on a stream of its own when it is too big for a datagram.
// Like a UDP send it never waits for a peer: without a connection it
// dials one in the background (when the peer is dialable), sends the
// packet once connected, and reports success now; a peer it cannot reach
// shows up as a probe without an ack, which is what memberlist's failure
// detection expects of a lost packet.
func (g *Gossip) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	now := time.Now()
	if c := g.lookup(a); c != nil {
		return now, g.send(c, b)
	}
	if g.ctx.Err() != nil {
		return time.Time{}, fmt.Errorf("gossip: %w", net.ErrClosed)
	}
	if a.Name == "" || (g.opts.Dialable != nil && !g.opts.Dialable(a.Name)) {
		g.dropped.Add(1)
		return now, nil
	}
	pkt := append([]byte(nil), b...)
	// Add under mu while ctx is live: Shutdown cancels under mu before it
	// waits, so no Add can race its Wait.
	g.mu.Lock()
	if g.ctx.Err() != nil {
		g.mu.Unlock()
		return time.Time{}, fmt.Errorf("gossip: %w", net.ErrClosed)
	}
	g.wg.Add(1)
	g.mu.Unlock()
	go func() {
		defer g.wg.Done()
		ctx, cancel := context.WithTimeout(g.ctx, g.qconf.HandshakeIdleTimeout)
		defer cancel()
		c, err := g.conn(ctx, a)
		if err != nil {
			g.dropped.Add(1)
			g.log.Debug("gossip packet dropped", "peer", a.Name, "err", err)
			return
		}
		if err := g.send(c, pkt); err != nil {
			g.log.Debug("gossip packet dropped", "peer", a.Name, "err", err)
		}
	}()
	return now, nil
}

func (g *Gossip) lookup(a memberlist.Address) *gossipConn {
	g.mu.Lock()
	defer g.mu.Unlock()
	if a.Name == "" {
		return g.byAddr[a.Addr]
	}
	return g.conns[a.Name]
}

func (g *Gossip) send(c *gossipConn, b []byte) error {
	err := c.qc.SendDatagram(b)
	var tooBig *quicgo.DatagramTooLargeError
	if errors.As(err, &tooBig) {
		ctx, cancel := context.WithTimeout(g.ctx, g.qconf.HandshakeIdleTimeout)
		defer cancel()
		err = g.sendPacketStream(ctx, c, b)
	}
	if err != nil {
		return fmt.Errorf("gossip packet to %s: %w", c.peer, err)
	}
	g.pktSent.Add(1)
	g.countSent(c.peer, len(b))
	return nil
}

func (g *Gossip) sendPacketStream(ctx context.Context, c *gossipConn, b []byte) error {
	st, err := c.qc.OpenUniStreamSync(ctx)
	if err != nil {
		return err
	}
	buf := binary.AppendUvarint([]byte{gossipKindPacket}, uint64(len(b)))
	buf = append(buf, b...)
	if _, err := st.Write(buf); err != nil {
		st.CancelWrite(0)
		return err
	}
	return st.Close()
}

// DialTimeout opens a stream to addr; see WriteTo.
func (g *Gossip) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return g.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

// DialAddressTimeout opens a stream to the named peer, over its connection
// (dialling one if need be).
func (g *Gossip) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(g.ctx, timeout)
	defer cancel()
	c, err := g.conn(ctx, a)
	if err != nil {
		return nil, err
	}
	st, err := c.qc.OpenStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("gossip stream to %s: %w", c.peer, err)
	}
	if _, err := st.Write([]byte{gossipKindStream}); err != nil {
		st.CancelRead(0)
		st.CancelWrite(0)
		return nil, fmt.Errorf("gossip stream to %s: %w", c.peer, err)
	}
	return g.streamConn(c, st), nil
}

// conn returns the connection to a's peer, dialling one when there is none.
// Concurrent callers for one peer share a dial.
func (g *Gossip) conn(ctx context.Context, a memberlist.Address) (*gossipConn, error) {
	for {
		g.mu.Lock()
		if g.ctx.Err() != nil {
			g.mu.Unlock()
			return nil, fmt.Errorf("gossip: %w", net.ErrClosed)
		}
		c := g.conns[a.Name]
		if a.Name == "" {
			c = g.byAddr[a.Addr]
		}
		if c != nil {
			g.mu.Unlock()
			return c, nil
		}
		if a.Name == "" {
			g.mu.Unlock()
			return nil, fmt.Errorf("gossip to %s: no connection and no node name to check its certificate against", a.Addr)
		}
		if g.opts.Dialable != nil && !g.opts.Dialable(a.Name) {
			g.mu.Unlock()
			return nil, fmt.Errorf("gossip to %s: it only dials out and has no connection open", a.Name)
		}
		if wait, ok := g.dials[a.Name]; ok {
			g.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("gossip to %s: %w", a.Name, ctx.Err())
			}
		}
		done := make(chan struct{})
		g.dials[a.Name] = done
		g.mu.Unlock()
		c, err := g.dial(ctx, a)
		g.mu.Lock()
		delete(g.dials, a.Name)
		close(done)
		g.mu.Unlock()
		return c, err
	}
}

func (g *Gossip) dial(ctx context.Context, a memberlist.Address) (*gossipConn, error) {
	ua, err := net.ResolveUDPAddr("udp", a.Addr)
	if err != nil {
		return nil, fmt.Errorf("gossip dial %s at %s: %w", a.Name, a.Addr, err)
	}
	tc, err := clientTLS(serverNameFor(g.opts.ClientTLS, a.Name), []string{ALPNGossip})
	if err != nil {
		return nil, err
	}
	qc, err := g.tr.Dial(ctx, ua, tc, g.qconf)
	if err != nil {
		return nil, fmt.Errorf("gossip dial %s at %s: %w", a.Name, a.Addr, err)
	}
	c, err := g.admit(qc, a.Name)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func serverNameFor(c *tls.Config, name string) *tls.Config {
	c = c.Clone()
	c.ServerName = name
	return c
}

func (g *Gossip) acceptLoop() {
	for {
		qc, err := g.ln.Accept(g.ctx)
		if err != nil {
			if g.ctx.Err() == nil {
				g.log.Error("gossip accept loop stopped", "err", err)
			}
			return
		}
		g.wg.Go(func() {
			hctx, cancel := context.WithTimeout(g.ctx, g.qconf.HandshakeIdleTimeout)
			defer cancel()
			select {
			case <-qc.HandshakeComplete():
			case <-hctx.Done():
				qc.CloseWithError(0, "handshake timeout")
				return
			}
			_, _ = g.admit(qc, "")
		})
	}
}

// admit checks a handshaken connection's peer (want, when the peer was
// dialled by name), registers it and starts its readers.
func (g *Gossip) admit(qc *quicgo.Conn, want string) (*gossipConn, error) {
	peer := peerOf(qc)
	remote := qc.RemoteAddr().String()
	var why string
	switch {
	case peer == "":
		why = "no certificate name"
	case want != "" && peer != want:
		why = fmt.Sprintf("certificate names %q, not %q", peer, want)
	case g.opts.Member != nil && !g.opts.Member(peer):
		why = fmt.Sprintf("%q is not a gateway of the topology", peer)
	}
	if why != "" {
		g.refused.Add(1)
		g.log.Warn("gossip peer refused", "remote", remote, "peer", peer, "reason", why)
		qc.CloseWithError(0x101, "refused")
		return nil, fmt.Errorf("gossip peer at %s refused: %s", remote, why)
	}
	c := &gossipConn{qc: qc, peer: peer}
	g.mu.Lock()
	if g.ctx.Err() != nil {
		g.mu.Unlock()
		qc.CloseWithError(0, "shutdown")
		return nil, fmt.Errorf("gossip: %w", net.ErrClosed)
	}
	g.conns[peer] = c
	g.byAddr[remote] = c
	g.all[c] = struct{}{}
	g.wg.Add(4) // under mu: see WriteToAddress
	g.mu.Unlock()
	g.log.Debug("gossip connection up", "peer", peer, "remote", remote)
	go func() { defer g.wg.Done(); g.readDatagrams(c) }()
	go func() { defer g.wg.Done(); g.acceptStreams(c) }()
	go func() { defer g.wg.Done(); g.acceptUniStreams(c) }()
	go func() {
		defer g.wg.Done()
		<-qc.Context().Done()
		g.mu.Lock()
		if g.conns[peer] == c {
			delete(g.conns, peer)
		}
		if g.byAddr[remote] == c {
			delete(g.byAddr, remote)
		}
		delete(g.all, c)
		g.mu.Unlock()
		g.log.Debug("gossip connection down", "peer", peer, "remote", remote, "err", context.Cause(qc.Context()))
	}()
	return c, nil
}

func (g *Gossip) deliver(c *gossipConn, b []byte, at time.Time) {
	g.pktRecv.Add(1)
	g.countRecv(c.peer, len(b))
	select {
	case g.packetCh <- &memberlist.Packet{Buf: b, From: c.qc.RemoteAddr(), Timestamp: at}:
	case <-g.ctx.Done():
	}
}

func (g *Gossip) readDatagrams(c *gossipConn) {
	for {
		b, err := c.qc.ReceiveDatagram(g.ctx)
		if err != nil {
			return
		}
		g.deliver(c, b, time.Now())
	}
}

func (g *Gossip) acceptUniStreams(c *gossipConn) {
	for {
		st, err := c.qc.AcceptUniStream(g.ctx)
		if err != nil {
			return
		}
		g.wg.Go(func() {
			defer st.CancelRead(0)
			_ = st.SetReadDeadline(time.Now().Add(g.qconf.MaxIdleTimeout))
			r := &byteReader{r: st}
			kind, err := r.ReadByte()
			if err != nil || kind != gossipKindPacket {
				return
			}
			n, err := binary.ReadUvarint(r)
			if err != nil || n > gossipPacketMax {
				return
			}
			b := make([]byte, n)
			if _, err := io.ReadFull(st, b); err != nil {
				return
			}
			g.deliver(c, b, time.Now())
		})
	}
}

func (g *Gossip) acceptStreams(c *gossipConn) {
	for {
		st, err := c.qc.AcceptStream(g.ctx)
		if err != nil {
			return
		}
		g.wg.Go(func() {
			_ = st.SetReadDeadline(time.Now().Add(g.qconf.HandshakeIdleTimeout))
			var kind [1]byte
			if _, err := io.ReadFull(st, kind[:]); err != nil || kind[0] != gossipKindStream {
				st.CancelRead(0)
				st.CancelWrite(0)
				return
			}
			_ = st.SetReadDeadline(time.Time{})
			select {
			case g.streamCh <- g.streamConn(c, st):
			case <-g.ctx.Done():
				st.CancelRead(0)
				st.CancelWrite(0)
			}
		})
	}
}

// byteReader reads one byte at a time, so that nothing past the header is
// buffered.
type byteReader struct{ r io.Reader }

func (b *byteReader) ReadByte() (byte, error) {
	var p [1]byte
	_, err := io.ReadFull(b.r, p[:])
	return p[0], err
}

func (g *Gossip) streamConn(c *gossipConn, st *quicgo.Stream) net.Conn {
	return &gossipStream{Stream: st, g: g, c: c}
}

// gossipStream is a QUIC stream as the net.Conn memberlist wants.
type gossipStream struct {
	*quicgo.Stream
	g    *Gossip
	c    *gossipConn
	once sync.Once
}

func (s *gossipStream) Read(p []byte) (int, error) {
	n, err := s.Stream.Read(p)
	if n > 0 {
		s.g.countRecv(s.c.peer, n)
	}
	return n, err
}

func (s *gossipStream) Write(p []byte) (int, error) {
	n, err := s.Stream.Write(p)
	if n > 0 {
		s.g.countSent(s.c.peer, n)
	}
	return n, err
}

// Close ends both directions: memberlist closes a stream when it is done
// with it.
func (s *gossipStream) Close() error {
	var err error
	s.once.Do(func() {
		err = s.Stream.Close()
		s.Stream.CancelRead(0)
	})
	return err
}

func (s *gossipStream) LocalAddr() net.Addr  { return s.c.qc.LocalAddr() }
func (s *gossipStream) RemoteAddr() net.Addr { return s.c.qc.RemoteAddr() }

// Shutdown closes every connection and the listener, and returns when
// every goroutine of the transport has ended. It may be called more than
// once.
func (g *Gossip) Shutdown() error {
	var err error
	g.once.Do(func() {
		g.mu.Lock()
		g.cancel()
		conns := make([]*gossipConn, 0, len(g.all))
		for c := range g.all {
			conns = append(conns, c)
		}
		g.mu.Unlock()
		for _, c := range conns {
			c.qc.CloseWithError(0, "shutdown")
		}
		err = g.ln.Close()
		g.wg.Wait()
		err = errors.Join(err, g.tr.Close())
		if g.ownPC {
			err = errors.Join(err, g.pc.Close())
		}
	})
	return err
}
