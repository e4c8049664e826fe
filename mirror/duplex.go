package mirror

import (
	"context"
	"net"
	"sync"

	"github.com/meridian-gw/meridian/transport"
)

// A duplex session (protocol version 4) carries legs in both directions
// over one transport.Conn: the dialler's legs to the listener, and the
// listener's legs back to the dialler (Hello.Receive, Welcome.Send). The
// frames split cleanly by direction, so a demultiplexer owns the
// connection's one Recv loop and hands each frame to one of two halves:
//
//   - the sending half gets what a receiver sends a sender (Resume, Ack,
//     Credit, TopicReady, Fenced), and runs outPeer.session;
//   - the receiving half gets what a sender sends (Batch, Topic, Groups,
//     and anything unexpected, which serveSession refuses), and runs
//     serveSession.
//
// Error and Goaway go to both: either ends the session. Each half is a
// transport.Conn whose Hello and Welcome are those of its own direction,
// so the exactly-once code of both ends runs unchanged. Sends go straight
// to the connection; closing either half closes the connection, ending
// both.

// duplex demultiplexes one connection's frames into two halves. Its
// goroutine (run) is started by newDuplex and waited for by wait.
type duplex struct {
	conn   transport.Conn
	send   *half // the sending half: receiver → sender frames
	recv   *half // the receiving half: sender → receiver frames
	done   chan struct{}
	err    error // why the Recv loop ended; set before done is closed
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// half is one direction of a duplex session.
type half struct {
	d       *duplex
	in      chan transport.Frame
	hello   *transport.Hello
	welcome *transport.Welcome
}

// halfQueue is how many frames may wait for a half. The demultiplexer
// blocks when one is full (its reader is slow), which holds back the
// other half too: both halves read promptly (the credit window bounds
// batches, and the sending half only updates state).
const halfQueue = 64

// newDuplex splits conn. sendHello/sendWelcome are what the sending half
// reports as its session's Hello and Welcome (the Welcome's Window and
// MaxBatchBytes are the peer's grant); recvHello/recvWelcome those of the
// receiving half (the Hello names the peer and the legs it sends).
func newDuplex(conn transport.Conn, sendHello *transport.Hello, sendWelcome *transport.Welcome,
	recvHello *transport.Hello, recvWelcome *transport.Welcome) *duplex {
	ctx, cancel := context.WithCancel(context.Background())
	d := &duplex{conn: conn, done: make(chan struct{}), cancel: cancel}
	d.send = &half{d: d, in: make(chan transport.Frame, halfQueue), hello: sendHello, welcome: sendWelcome}
	d.recv = &half{d: d, in: make(chan transport.Frame, halfQueue), hello: recvHello, welcome: recvWelcome}
	d.wg.Go(func() { d.run(ctx) })
	return d
}

// run is the one Recv loop of the connection.
func (d *duplex) run(ctx context.Context) {
	defer close(d.done)
	deliver := func(h *half, f transport.Frame) bool {
		select {
		case h.in <- f:
			return true
		case <-ctx.Done():
			return false
		case <-d.conn.Done():
			// Still hand it over if there is room: frames that arrived
			// before the end are read, as from a Conn.
			select {
			case h.in <- f:
				return true
			default:
				return false
			}
		}
	}
	for {
		f, err := d.conn.Recv(ctx)
		if err != nil {
			if ctx.Err() != nil { // close: say why the connection ended, not that we stopped reading
				if err = d.conn.Err(); err == nil {
					err = transport.ErrClosed
				}
			}
			d.err = err
			return
		}
		switch f.(type) {
		case *transport.Resume, *transport.Ack, *transport.Credit, *transport.TopicReady, *transport.Fenced:
			if !deliver(d.send, f) {
				d.err = d.conn.Err()
				return
			}
		case *transport.Error, *transport.Goaway:
			ok := deliver(d.send, f) && deliver(d.recv, f)
			if !ok {
				d.err = d.conn.Err()
				return
			}
		default:
			if !deliver(d.recv, f) {
				d.err = d.conn.Err()
				return
			}
		}
	}
}

// close closes the connection and waits for the Recv loop. Safe to call
// more than once.
func (d *duplex) close(err error) {
	d.conn.Close(err)
	d.cancel()
	d.wg.Wait()
}

func (h *half) Send(ctx context.Context, f transport.Frame) error { return h.d.conn.Send(ctx, f) }

// Recv returns the half's next frame; once the connection's Recv loop has
// ended, the frames still queued, then why it ended.
func (h *half) Recv(ctx context.Context) (transport.Frame, error) {
	select {
	case f := <-h.in:
		return f, nil
	default:
	}
	select {
	case f := <-h.in:
		return f, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-h.d.done:
		select {
		case f := <-h.in:
			return f, nil
		default:
		}
		if err := h.d.err; err != nil {
			return nil, err
		}
		return nil, transport.ErrClosed
	}
}

func (h *half) Hello() *transport.Hello     { return h.hello }
func (h *half) Welcome() *transport.Welcome { return h.welcome }
func (h *half) Stats() transport.ConnStats  { return h.d.conn.Stats() }
func (h *half) Close(err error) error       { return h.d.conn.Close(err) }
func (h *half) Done() <-chan struct{}       { return h.d.conn.Done() }
func (h *half) Err() error                  { return h.d.conn.Err() }
func (h *half) RemoteAddr() net.Addr        { return h.d.conn.RemoteAddr() }

// Tentative reports the connection's (transport.Tentative).
func (h *half) Tentative() bool {
	t, ok := h.d.conn.(transport.Tentative)
	return ok && t.Tentative()
}

var (
	_ transport.Conn      = (*half)(nil)
	_ transport.Tentative = (*half)(nil)
)
