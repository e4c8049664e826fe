package amqp

import (
	"context"
	"errors"
	"fmt"
	"slices"

	goamqp "github.com/Azure/go-amqp"

	"github.com/meridian-gw/meridian/transport"
)

// Dialer opens sessions to a receiving gateway through a broker: every
// Dial opens its own AMQP connection, one AMQP session with a sender on the
// data address and one with a receiver on the control address (one AMQP
// session per link, see the package doc). It implements transport.Dialer.
type Dialer struct {
	opts DialerOptions
}

var _ transport.Dialer = (*Dialer)(nil)

// NewDialer checks o and returns a Dialer. It connects to nothing.
func NewDialer(o DialerOptions) (*Dialer, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	return &Dialer{opts: o}, nil
}

// Dial opens a session: it sends h on the data address and waits for the
// receiver's Welcome (or Error) on the control address, skipping messages
// of other (ended) sessions. addr is ignored: the Dialer's Broker and
// Addresses say where.
func (d *Dialer) Dial(ctx context.Context, _ string, h *transport.Hello) (transport.Conn, error) {
	o := &d.opts
	co, err := o.Broker.connOptions()
	if err != nil {
		return nil, err
	}
	where := o.Broker.addr()
	ac, err := goamqp.Dial(ctx, where, co)
	if err != nil {
		return nil, fmt.Errorf("dial amqp broker %s: %w", where, err)
	}
	c, err := d.open(ctx, ac, h)
	if err != nil {
		closeBounded(o.Timing.CloseTimeout, func(context.Context) error { return ac.Close() })
		return nil, err
	}
	return c, nil
}

func (d *Dialer) open(ctx context.Context, ac *goamqp.Conn, h *transport.Hello) (*Conn, error) {
	o := &d.opts
	where := o.Broker.addr()
	ss, err := ac.NewSession(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("amqp broker %s: begin session: %w", where, err)
	}
	snd, err := ss.NewSender(ctx, o.Addresses.Data, nil)
	if err != nil {
		return nil, fmt.Errorf("amqp broker %s: attach sender to %s: %w", where, o.Addresses.Data, err)
	}
	rs, err := ac.NewSession(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("amqp broker %s: begin session: %w", where, err)
	}
	// Manual credit, as on the listener's data receivers (creditWindow):
	// go-amqp's automatic credit stalls against RabbitMQ 3.10 even when
	// every message is settled on receipt (a plain loop stopped after
	// about 7,300 of 10,000 messages), and a control receiver that stalls
	// stops the Acks, and with them the session.
	rcv, err := rs.NewReceiver(ctx, o.Addresses.Control, &goamqp.ReceiverOptions{Credit: -1})
	if err != nil {
		return nil, fmt.Errorf("amqp broker %s: attach receiver to %s: %w", where, o.Addresses.Control, err)
	}
	cw := &creditWindow{rcv: rcv, size: o.Credit}
	if err := cw.open(); err != nil {
		return nil, fmt.Errorf("amqp broker %s: credit on %s: %w", where, o.Addresses.Control, err)
	}
	id := newSessionID()
	c, err := newConn(id, true, o.Codec, o.Limits, o.Timing, o.Logger.With("session", id))
	if err != nil {
		return nil, err
	}
	c.hello, c.addrs, c.broker = h, o.Addresses, where
	c.onEnd = func() { closeBounded(o.Timing.CloseTimeout, func(context.Context) error { return ac.Close() }) }
	c.send = func(ctx context.Context, m *goamqp.Message) error { return snd.Send(ctx, m, nil) }
	// The handshake has no Welcome yet: CheckVersion is skipped for Hello.
	c.welcome = &transport.Welcome{Version: transport.VersionMin}
	hctx, cancel := context.WithTimeout(ctx, o.Timing.Handshake)
	defer cancel()
	if err := c.sendFrame(hctx, h); err != nil {
		return nil, fmt.Errorf("send hello to %s: %w", o.Addresses.Data, err)
	}
	w, err := d.welcome(hctx, c, cw, h)
	if err != nil {
		c.end(err)
		return nil, err
	}
	if err := c.dec.SetVersion(w.Version); err != nil {
		c.end(err)
		return nil, err
	}
	c.welcome, c.maxRaw = w, w.MaxBatchBytes

	// From here on messages are pipelined: a slot of sem per message
	// waiting for the broker's outcome, which the confirmer checks in
	// order.
	sem := make(chan struct{}, o.MaxInFlight)
	receipts := make(chan goamqp.SendReceipt, o.MaxInFlight)
	c.send = func(ctx context.Context, m *goamqp.Message) error {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		case <-c.ended:
			return c.Err()
		}
		r, err := snd.SendWithReceipt(ctx, m, nil)
		if err != nil {
			<-sem
			return err
		}
		receipts <- r // never blocks: a slot is held
		return nil
	}
	c.flow = func() string {
		return fmt.Sprintf("%d of %d messages await the broker's outcome; control %s", len(sem), cap(sem), cw.state())
	}
	c.wg.Add(3)
	go c.confirm(receipts, sem)
	go c.read(cw)
	go c.pinger()
	c.log.Info("amqp session open", "broker", where, "data", o.Addresses.Data, "control", o.Addresses.Control,
		"peer", w.Gateway, "version", w.Version)
	return c, nil
}

// welcome waits for the answer to h.
func (d *Dialer) welcome(ctx context.Context, c *Conn, cw *creditWindow, h *transport.Hello) (*transport.Welcome, error) {
	rcv := cw.rcv
	for {
		m, err := rcv.Receive(ctx, nil)
		if err != nil {
			return nil, fmt.Errorf("wait for welcome on %s: %w", c.addrs.Control, err)
		}
		cw.received()
		if rcv.AcceptMessage(ctx, m) == nil {
			cw.settled()
		}
		if sessionOf(m) != c.id {
			continue // an ended session's
		}
		f, _, err := decodeMessage(c.dec, &c.body, m, true)
		if err != nil {
			return nil, fmt.Errorf("handshake on %s: %w", c.addrs.Control, err)
		}
		c.lastRecv.Store(nowNano())
		switch f := f.(type) {
		case *transport.Welcome:
			if f.Version < h.VersionMin || f.Version > h.VersionMax || f.Version < transport.VersionMin || f.Version > transport.VersionMax {
				return nil, &transport.Error{Code: transport.ErrCodeVersion,
					Message: fmt.Sprintf("welcome chose version %d outside the %d-%d offered", f.Version, h.VersionMin, h.VersionMax)}
			}
			return f, nil
		case *transport.Error:
			return nil, fmt.Errorf("peer refused the session on %s (%s): %w", c.addrs.Data, f.CodeName(), f)
		default:
			return nil, fmt.Errorf("handshake on %s: unexpected %s frame", c.addrs.Control, transport.TypeOf(f))
		}
	}
}

// confirm waits for the broker's outcome of every message sent, in order.
// Anything but accepted ends the session: a frame the peer will never see
// would break the session's order.
func (c *Conn) confirm(receipts <-chan goamqp.SendReceipt, sem <-chan struct{}) {
	defer c.wg.Done()
	for {
		var r goamqp.SendReceipt
		select {
		case r = <-receipts:
		case <-c.ended:
			return
		}
		state, err := r.Wait(c.ctx)
		<-sem
		if err != nil {
			if c.ctx.Err() == nil {
				c.end(fmt.Errorf("amqp broker %s: outcome of a message to %s: %w", c.broker, c.addrs.Data, err))
			}
			return
		}
		switch s := state.(type) {
		case *goamqp.StateAccepted:
		case *goamqp.StateRejected:
			c.end(fmt.Errorf("amqp broker %s rejected a message to %s: %v", c.broker, c.addrs.Data, s.Error))
			return
		default:
			c.end(fmt.Errorf("amqp broker %s did not accept a message to %s (outcome %T)", c.broker, c.addrs.Data, state))
			return
		}
	}
}

// read receives the control address's messages of this session.
func (c *Conn) read(cw *creditWindow) {
	defer c.wg.Done()
	rcv := cw.rcv
	for {
		m, err := rcv.Receive(c.ctx, nil)
		if err != nil {
			if c.ctx.Err() == nil {
				c.end(fmt.Errorf("amqp broker %s: receive from %s: %w", c.broker, c.addrs.Control, err))
			}
			return
		}
		cw.received()
		// Control frames are settled when read: they are worth nothing
		// outside this session.
		actx, cancel := context.WithTimeout(c.ctx, c.timing.CloseTimeout)
		err = rcv.AcceptMessage(actx, m)
		cancel()
		if err == nil {
			cw.settled()
		}
		if err != nil && c.ctx.Err() == nil {
			c.end(fmt.Errorf("amqp broker %s: accept on %s: %w", c.broker, c.addrs.Control, err))
			return
		}
		if sessionOf(m) != c.id {
			continue
		}
		if _, ok := c.handle(m); !ok {
			return
		}
	}
}

// codecFor picks the codec for a peer that decodes codecs (empty: any).
func codecFor(want transport.Codec, peer []transport.Codec) transport.Codec {
	if len(peer) > 0 && !slices.Contains(peer, want) {
		return transport.CodecNone
	}
	return want
}

var errListenerClosed = errors.New("amqp listener closed")
