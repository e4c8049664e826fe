package transporttest

// An in-memory transport for tests: sessions are pairs of bounded channels
// that pass frames without encoding. A Network can cut every session at once
// to emulate a link failure.

import (
	"context"
	"errors"
	"net"
	"sync"

	"github.com/meridian-gw/meridian/transport"
)

// Network joins in-memory listeners and dialers by address.
type Network struct {
	mu        sync.Mutex
	listeners map[string]*Listener
	conns     map[*memConn]struct{}
	down      bool
}

// NewNetwork returns an empty network.
func NewNetwork() *Network {
	return &Network{listeners: map[string]*Listener{}, conns: map[*memConn]struct{}{}}
}

// Listen registers a listener at addr; accept decides each session.
func (n *Network) Listen(addr string, accept transport.Accept) (*Listener, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.listeners[addr]; ok {
		return nil, errors.New("transporttest: address in use: " + addr)
	}
	l := &Listener{n: n, addr: addr, accept: accept, conns: make(chan *memConn, 16), done: make(chan struct{})}
	n.listeners[addr] = l
	return l, nil
}

// SetDown cuts every open session and refuses new ones while down is true.
func (n *Network) SetDown(down bool) {
	n.mu.Lock()
	n.down = down
	var cut []*memConn
	if down {
		for c := range n.conns {
			cut = append(cut, c)
		}
	}
	n.mu.Unlock()
	for _, c := range cut {
		c.Close(errors.New("transporttest: link down"))
	}
}

// Dialer returns a dialer on the network.
func (n *Network) Dialer() transport.Dialer { return memDialer{n} }

type memDialer struct{ n *Network }

func (d memDialer) Dial(ctx context.Context, addr string, h *transport.Hello) (transport.Conn, error) {
	d.n.mu.Lock()
	l := d.n.listeners[addr]
	down := d.n.down
	d.n.mu.Unlock()
	if down {
		return nil, errors.New("transporttest: link down")
	}
	if l == nil {
		return nil, errors.New("transporttest: connection refused: " + addr)
	}
	w, err := l.accept(h)
	if err != nil {
		return nil, err
	}
	v, ok := transport.NegotiateVersion(h.VersionMin, h.VersionMax)
	if !ok {
		return nil, &transport.Error{Code: transport.ErrCodeVersion, Message: "no common protocol version"}
	}
	w.Version = v
	if v < transport.VersionDuplex {
		w.Send = nil // not on the wire below version 4
	}
	a, b := memPair(d.n, h, w, addr)
	select {
	case l.conns <- b:
	case <-l.done:
		return nil, errors.New("transporttest: listener closed")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return a, nil
}

// Listener accepts in-memory sessions.
type Listener struct {
	n      *Network
	addr   string
	accept transport.Accept
	conns  chan *memConn
	once   sync.Once
	done   chan struct{}
}

// Accept returns the next session.
func (l *Listener) Accept(ctx context.Context) (transport.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, transport.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Addr is the listener's address on the network.
func (l *Listener) Addr() net.Addr { return memAddr(l.addr) }

// Close unregisters the listener. Open sessions stay open.
func (l *Listener) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.n.mu.Lock()
		delete(l.n.listeners, l.addr)
		l.n.mu.Unlock()
	})
	return nil
}

type memAddr string

func (a memAddr) Network() string { return "mem" }
func (a memAddr) String() string  { return string(a) }

// memSession is the state both ends share.
type memSession struct {
	once sync.Once
	done chan struct{}
	err  error
}

type memConn struct {
	n      *Network
	s      *memSession
	in     chan transport.Frame
	out    chan transport.Frame
	hello  *transport.Hello
	wel    *transport.Welcome
	remote string
}

func memPair(n *Network, h *transport.Hello, w *transport.Welcome, addr string) (*memConn, *memConn) {
	s := &memSession{done: make(chan struct{})}
	ab, ba := make(chan transport.Frame, 256), make(chan transport.Frame, 256)
	a := &memConn{n: n, s: s, in: ba, out: ab, hello: h, wel: w, remote: addr}
	b := &memConn{n: n, s: s, in: ab, out: ba, hello: h, wel: w, remote: "dialer:" + h.Gateway}
	n.mu.Lock()
	n.conns[a] = struct{}{}
	n.mu.Unlock()
	return a, b
}

func (c *memConn) Send(ctx context.Context, f transport.Frame) error {
	if b, ok := f.(*transport.Batch); ok {
		b.WireSize = len(b.Kafka)
		for i := range b.Records {
			b.WireSize += len(b.Records[i].Key) + len(b.Records[i].Value) + 16
		}
		if b.Kafka != nil {
			// The receiver owns what it receives and patches Kafka
			// batches in place, as it may with a decoded frame: give
			// it its own copy, as a real link does.
			cp := *b
			cp.Kafka = append([]byte{}, b.Kafka...)
			f = &cp
		}
	}
	select {
	case <-c.s.done:
		return c.closedErr()
	default:
	}
	select {
	case c.out <- f:
		return nil
	case <-c.s.done:
		return c.closedErr()
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *memConn) Recv(ctx context.Context) (transport.Frame, error) {
	select {
	case f := <-c.in:
		return f, nil
	case <-c.s.done:
		return nil, c.closedErr()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *memConn) closedErr() error {
	if c.s.err != nil {
		return c.s.err
	}
	return transport.ErrClosed
}

func (c *memConn) Hello() *transport.Hello     { return c.hello }
func (c *memConn) Welcome() *transport.Welcome { return c.wel }
func (c *memConn) Stats() transport.ConnStats  { return transport.ConnStats{} }
func (c *memConn) Done() <-chan struct{}       { return c.s.done }
func (c *memConn) RemoteAddr() net.Addr        { return memAddr(c.remote) }
func (c *memConn) Err() error                  { return c.closedErr() }

// Close ends the session for both ends.
func (c *memConn) Close(err error) error {
	c.s.once.Do(func() {
		c.s.err = err
		close(c.s.done)
	})
	c.n.mu.Lock()
	delete(c.n.conns, c)
	c.n.mu.Unlock()
	return nil
}

var (
	_ transport.Conn     = (*memConn)(nil)
	_ transport.Listener = (*Listener)(nil)
)
