package amqp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	goamqp "github.com/Azure/go-amqp"

	"github.com/meridian-gw/meridian/transport"
)

// Listener receives sessions through a broker: it holds one AMQP
// connection with, per Peer, a receiver on the data address and a sender
// on the control address (each on an AMQP session of its own), and keeps
// them for its whole life, reconnecting with capped backoff when the
// broker goes away (sessions on the lost connection end). It implements
// transport.Listener.
//
// # Goroutines
//
// A supervisor connects and reconnects; while connected, one reader per
// Peer demultiplexes the data address's messages by session id to their
// Conn, answering Hellos itself. Close waits for all of them and ends
// every session.
type Listener struct {
	opts     ListenerOptions
	accepted chan *Conn
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	mu       sync.Mutex
	sessions map[string]*Conn // by session id
	current  map[int]*Conn    // the live session of each peer (index in opts.Peers)
	refused  map[string]bool  // session ids told "unknown session" (bounded)
	closed   bool
	crashed  bool // crash: end without a word to anyone

	connected          atomic.Bool
	connects, failures atomic.Int64
	flowResent         atomic.Int64
}

// ListenerStats counts a listener's broker connections and what its
// receivers did, for metrics.
type ListenerStats struct {
	Broker    string
	Connected bool  // holds a broker connection now
	Connects  int64 // broker connections opened
	Failures  int64 // connection attempts, and connections, that failed
	// FlowResent counts flow frames sent again to a receiver silent with
	// credit granted (the RabbitMQ 3.10 stall, see the package doc).
	FlowResent int64
	Peers      []PeerStats
}

// PeerStats is one sending gateway's direction through the listener.
type PeerStats struct {
	Gateway string
	Address string // the data address
	Held    int    // batch messages held for their Ack, in its live sessions
}

// Stats returns the listener's counters.
func (l *Listener) Stats() ListenerStats {
	st := ListenerStats{Broker: l.opts.Broker.addr(), Connected: l.connected.Load(), Connects: l.connects.Load(),
		Failures: l.failures.Load(), FlowResent: l.flowResent.Load()}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range l.opts.Peers {
		ps := PeerStats{Gateway: p.Gateway, Address: p.Addresses.Data}
		for _, c := range l.sessions {
			if c.hello != nil && c.hello.Gateway == p.Gateway {
				ps.Held += c.Held()
			}
		}
		st.Peers = append(st.Peers, ps)
	}
	return st
}

var _ transport.Listener = (*Listener)(nil)

// Listen checks o and starts receiving. It returns at once: the broker is
// reached in the background (a broker that is down delays sessions, it is
// not an error here).
func Listen(o ListenerOptions) (*Listener, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &Listener{
		opts: o, accepted: make(chan *Conn, 16), ctx: ctx, cancel: cancel,
		sessions: map[string]*Conn{}, current: map[int]*Conn{}, refused: map[string]bool{},
	}
	l.wg.Add(1)
	go l.supervise()
	return l, nil
}

// Accept returns the next session.
func (l *Listener) Accept(ctx context.Context) (transport.Conn, error) {
	select {
	case c := <-l.accepted:
		return c, nil
	case <-l.ctx.Done():
		return nil, transport.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Addr is the broker and the first peer's data address.
func (l *Listener) Addr() net.Addr {
	return Addr{Broker: l.opts.Broker.addr(), Address: l.opts.Peers[0].Addresses.Data}
}

// Close stops receiving, ends every session and waits. Safe to call more
// than once.
func (l *Listener) Close() error {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.cancel()
	l.wg.Wait()
	for {
		select {
		case c := <-l.accepted:
			c.Close(errListenerClosed)
			continue
		default:
		}
		break
	}
	return nil
}

// crash ends the listener as if its process died: no Goaway, no Error,
// unsettled messages left to the broker. For tests (CrashForTest).
func (l *Listener) crash() {
	l.mu.Lock()
	l.crashed = true
	l.mu.Unlock()
	l.Close()
}

// supervise connects, serves until the connection fails, and reconnects
// with capped exponential backoff (the first and every 10th failure are
// logged at warn).
func (l *Listener) supervise() {
	defer l.wg.Done()
	backoff, fails := 100*time.Millisecond, 0
	for l.ctx.Err() == nil {
		began := time.Now()
		err := l.serve()
		if l.ctx.Err() != nil {
			return
		}
		l.failures.Add(1)
		if time.Since(began) > 10*time.Second {
			backoff, fails = 100*time.Millisecond, 0
		}
		fails++
		if fails == 1 || fails%10 == 0 {
			l.opts.Logger.Warn("amqp broker unreachable; retrying", "broker", l.opts.Broker.addr(), "err", err, "failures", fails, "backoff", backoff)
		} else {
			l.opts.Logger.Debug("amqp broker unreachable; retrying", "broker", l.opts.Broker.addr(), "err", err, "failures", fails)
		}
		select {
		case <-time.After(backoff):
		case <-l.ctx.Done():
			return
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// serve holds one broker connection until it fails or the listener
// closes, then ends the sessions it carried.
func (l *Listener) serve() error {
	o := &l.opts
	where := o.Broker.addr()
	co, err := o.Broker.connOptions()
	if err != nil {
		return err
	}
	dctx, cancel := context.WithTimeout(l.ctx, 30*time.Second)
	ac, err := goamqp.Dial(dctx, where, co)
	if err != nil {
		cancel()
		return fmt.Errorf("dial amqp broker %s: %w", where, err)
	}
	type link struct {
		rcv *goamqp.Receiver
		snd *goamqp.Sender
	}
	links := make([]link, len(o.Peers))
	for i, p := range o.Peers {
		rs, err := ac.NewSession(dctx, nil)
		if err == nil {
			// Manual credit: see creditWindow.
			links[i].rcv, err = rs.NewReceiver(dctx, p.Addresses.Data, &goamqp.ReceiverOptions{Credit: -1})
			if err != nil {
				err = fmt.Errorf("attach receiver to %s: %w", p.Addresses.Data, err)
			}
		}
		if err == nil {
			var ss *goamqp.Session
			if ss, err = ac.NewSession(dctx, nil); err == nil {
				links[i].snd, err = ss.NewSender(dctx, p.Addresses.Control, nil)
				if err != nil {
					err = fmt.Errorf("attach sender to %s: %w", p.Addresses.Control, err)
				}
			}
		}
		if err != nil {
			cancel()
			closeBounded(o.Timing.CloseTimeout, func(context.Context) error { return ac.Close() })
			return fmt.Errorf("amqp broker %s: %w", where, err)
		}
	}
	cancel()
	o.Logger.Info("amqp listener connected", "broker", where, "peers", len(o.Peers))
	l.connects.Add(1)
	l.connected.Store(true)
	defer l.connected.Store(false)
	sctx, stop := context.WithCancel(l.ctx)
	var wg sync.WaitGroup
	errs := make(chan error, len(links))
	for i := range links {
		wg.Go(func() { errs <- l.read(sctx, i, links[i].rcv, links[i].snd) })
	}
	var cause error
	select {
	case cause = <-errs:
	case <-ac.Done():
		cause = fmt.Errorf("amqp broker %s: connection lost: %w", where, ac.Err())
	case <-l.ctx.Done():
		cause = errListenerClosed
	}
	stop()
	l.mu.Lock()
	crashed := l.crashed
	l.mu.Unlock()
	if crashed {
		// As a process that dies: the connection goes first, so the
		// broker requeues what was unsettled and the peers hear nothing.
		closeBounded(o.Timing.CloseTimeout, func(context.Context) error { return ac.Close() })
	}
	// End the sessions first: their Goaway or Error still has a link.
	for _, c := range l.liveSessions() {
		if cause == errListenerClosed {
			c.Close(nil)
		} else {
			c.end(cause)
		}
	}
	closeBounded(o.Timing.CloseTimeout, func(context.Context) error { return ac.Close() })
	wg.Wait()
	for _, c := range l.liveSessions() {
		<-c.Done()
	}
	return cause
}

// liveSessionsOf counts the live sessions of peer gateway gw.
func (l *Listener) liveSessionsOf(gw string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, c := range l.sessions {
		if c.hello != nil && c.hello.Gateway == gw {
			n++
		}
	}
	return n
}

func (l *Listener) liveSessions() []*Conn {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]*Conn, 0, len(l.sessions))
	for _, c := range l.sessions {
		out = append(out, c)
	}
	return out
}

// read demultiplexes peer i's data address.
func (l *Listener) read(ctx context.Context, i int, rcv *goamqp.Receiver, snd *goamqp.Sender) error {
	p := l.opts.Peers[i]
	w := &creditWindow{rcv: rcv, size: l.opts.Credit}
	if err := w.open(); err != nil {
		return fmt.Errorf("amqp broker %s: credit on %s: %w", l.opts.Broker.addr(), p.Addresses.Data, err)
	}
	settle := func(m *goamqp.Message) {
		actx, cancel := context.WithTimeout(context.Background(), l.opts.Timing.CloseTimeout)
		err := rcv.AcceptMessage(actx, m)
		cancel()
		if err == nil {
			w.settled()
		}
	}
	for {
		// A live session's peer sends at least a Ping every KeepAlive:
		// silence for longer, with credit granted, means the broker's view
		// of the credit went astray (RabbitMQ 3.10: messages ready, a
		// consumer, nothing delivered). A fresh flow frame sets it again.
		rctx, cancel := context.WithTimeout(ctx, 2*l.opts.Timing.KeepAlive)
		m, err := rcv.Receive(rctx, nil)
		cancel()
		if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			if l.liveSessionsOf(p.Gateway) > 0 {
				n := w.kick()
				l.flowResent.Add(1)
				l.opts.Logger.Info("amqp receiver silent with credit granted; flow sent again", "address", p.Addresses.Data, "credit", n)
			}
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("amqp broker %s: receive from %s: %w", l.opts.Broker.addr(), p.Addresses.Data, err)
		}
		w.received()
		sid := sessionOf(m)
		l.mu.Lock()
		c := l.sessions[sid]
		l.mu.Unlock()
		if c != nil {
			if keep, _ := c.handle(m); !keep {
				settle(m)
			}
			continue
		}
		settle(m)
		if sid == "" {
			l.opts.Logger.Warn("message without a session id dropped", "address", p.Addresses.Data)
			continue
		}
		dec := transport.NewDecoder(l.opts.Limits)
		f, _, err := decodeMessage(dec, nil, m, true)
		dec.Close()
		if h, ok := f.(*transport.Hello); ok && err == nil {
			l.handshake(ctx, i, sid, h, rcv, snd, settle, w)
			continue
		}
		l.unknown(ctx, p, sid, snd)
	}
}

// unknown answers the first message of a session the listener does not
// know (it restarted, or the session ended) with Error protocol, so that
// the dialer redials at once instead of waiting for its idle timeout.
func (l *Listener) unknown(ctx context.Context, p Peer, sid string, snd *goamqp.Sender) {
	l.mu.Lock()
	told := l.refused[sid]
	if !told {
		if len(l.refused) > 1024 {
			clear(l.refused)
		}
		l.refused[sid] = true
	}
	l.mu.Unlock()
	if told {
		return
	}
	l.opts.Logger.Info("message of an unknown session dropped", "address", p.Addresses.Data, "session", sid)
	c := &Conn{id: sid}
	e := &transport.Error{Code: transport.ErrCodeProtocol, Message: "unknown session " + sid + " (the receiving gateway restarted or ended it)"}
	if err := l.reply(ctx, c, snd, e); err != nil {
		l.opts.Logger.Debug("reply to unknown session", "err", err)
	}
}

// reply sends one frame of session c (possibly not established) on snd.
func (l *Listener) reply(ctx context.Context, c *Conn, snd *goamqp.Sender, f transport.Frame) error {
	b, err := transport.AppendFrame(nil, f)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, l.opts.Timing.Handshake)
	defer cancel()
	m := c.message(b, transport.TypeOf(f))
	m.Header = &goamqp.MessageHeader{TTL: l.opts.Timing.Handshake} // an answer nobody waits for after that
	return snd.Send(sctx, m, nil)
}

// handshake answers a Hello: Welcome and a new session, or Error.
func (l *Listener) handshake(ctx context.Context, i int, sid string, h *transport.Hello, rcv *goamqp.Receiver, snd *goamqp.Sender, settle func(*goamqp.Message), w8 *creditWindow) {
	p := l.opts.Peers[i]
	log := l.opts.Logger.With("session", sid, "peer", h.Gateway, "address", p.Addresses.Data)
	refuse := func(e *transport.Error) {
		log.Warn("session refused", "err", e)
		if err := l.reply(ctx, &Conn{id: sid}, snd, e); err != nil {
			log.Debug("send refusal", "err", err)
		}
	}
	version, ok := transport.NegotiateVersion(h.VersionMin, h.VersionMax)
	if !ok {
		refuse(&transport.Error{Code: transport.ErrCodeVersion, Message: fmt.Sprintf("no common protocol version (receiver speaks %d-%d, sender %s speaks %d-%d)",
			transport.VersionMin, transport.VersionMax, h.Gateway, h.VersionMin, h.VersionMax)})
		return
	}
	if h.Gateway != p.Gateway {
		// The address names the sending gateway; the broker's
		// permissions on it are the peer's authentication.
		refuse(&transport.Error{Code: transport.ErrCodeIdentity, Message: fmt.Sprintf("hello from %q on %s, which carries gateway %s", h.Gateway, p.Addresses.Data, p.Gateway)})
		return
	}
	w, err := l.opts.Accept(h)
	if err != nil {
		e, ok := err.(*transport.Error)
		if !ok {
			e = &transport.Error{Code: transport.ErrCodeInternal, Message: err.Error()}
		}
		refuse(e)
		return
	}
	w.Version = version
	lim := l.opts.Limits
	if w.MaxBatchBytes > 0 {
		lim.MaxBatchBytes = int(w.MaxBatchBytes)
	}
	c, err := newConn(sid, false, codecFor(l.opts.Codec, h.Codecs), lim, l.opts.Timing, log)
	if err != nil {
		refuse(&transport.Error{Code: transport.ErrCodeInternal, Message: err.Error()})
		return
	}
	c.dec.SetVersion(version)
	c.hello, c.welcome, c.addrs, c.broker = h, w, p.Addresses, l.opts.Broker.addr()
	c.settle = settle
	c.send = func(ctx context.Context, m *goamqp.Message) error { return snd.Send(ctx, m, nil) }
	c.flow = func() string { return fmt.Sprintf("%s; %d batch messages held for their Ack", w8.state(), c.Held()) }

	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	old := l.current[i]
	l.sessions[sid], l.current[i] = c, c
	l.mu.Unlock()
	c.onEnd = func() {
		l.mu.Lock()
		delete(l.sessions, sid)
		if l.current[i] == c {
			delete(l.current, i)
		}
		l.mu.Unlock()
	}
	if old != nil {
		old.end(fmt.Errorf("superseded by session %s of %s", sid, h.Gateway))
	}
	if err := c.sendFrame(ctx, w); err != nil {
		log.Warn("send welcome", "err", err)
		c.end(err)
		return
	}
	c.wg.Add(1)
	go c.pinger()
	log.Info("amqp session accepted", "version", version, "legs", h.Legs, "region", h.Region)
	select {
	case l.accepted <- c:
	case <-ctx.Done():
		c.Close(errListenerClosed)
	}
}

// creditWindow grants a data receiver's link credit by hand, as a window:
// credit the broker may still use plus messages held unsettled never
// exceed size. Each settled message returns one credit, granted in
// chunks of a quarter of the window, or at once when little credit is
// left. go-amqp's automatic credit is not used: it grants again only once
// the messages settled since its last grant reach the credit left, and
// with batches held until their Ack (settled in groups, out of step with
// their arrival) the credit it left shrank until the link stalled with a
// few messages held and none settled (seen with 64 KiB batches: the
// receiver waited for more batches to ack, the broker for credit).
type creditWindow struct {
	rcv *goamqp.Receiver

	mu      sync.Mutex
	size    int
	avail   int // credit granted and not yet used by the broker
	pending int // settled messages whose credit is not granted yet
}

// kick sends a flow frame again: one credit more, which the next settled
// message's credit then does not return (the window stays at its size).
// It returns the credit the broker is now told of.
func (w *creditWindow) kick() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.rcv.IssueCredit(1); err != nil {
		return w.avail
	}
	w.avail++
	w.pending-- // may go below zero: the next settled message is not granted again
	return w.avail
}

// state describes the window, for errors about a silent peer.
func (w *creditWindow) state() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return fmt.Sprintf("receiver credit: %d of %d granted and unused, %d settled not yet granted again", w.avail, w.size, w.pending)
}

func (w *creditWindow) open() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.avail = w.size
	return w.rcv.IssueCredit(uint32(w.size))
}

func (w *creditWindow) received() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.avail--
	w.grantLocked()
}

func (w *creditWindow) settled() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pending++
	w.grantLocked()
}

func (w *creditWindow) grantLocked() {
	if w.pending <= 0 || w.pending < max(1, w.size/4) && w.avail >= max(1, w.size/4) {
		return
	}
	if err := w.rcv.IssueCredit(uint32(w.pending)); err != nil {
		return // the link is ending; its reader sees why
	}
	w.avail += w.pending
	w.pending = 0
}
