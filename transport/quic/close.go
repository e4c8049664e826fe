package quic

// Ending a session: Close, the supervisor that stops its goroutines in
// order, and how errors are explained and sent to the peer.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/meridian-gw/meridian/transport"
)

// Close ends the session and waits for every goroutine of the session.
//
// It sends reason to the peer as an Error frame if it is a *transport.Error,
// otherwise as a Goaway (carrying reason's text, if any), after flushing what
// Send had queued (for up to a second), and closes the QUIC connection with
// the error's code (0 for a Goaway) and message. A graceful close (Goaway)
// also finishes every stream and waits up to a second for the peer to read
// what is in flight and close the connection. Batches the peer has not
// acknowledged may still be lost; the resume protocol resends them.
//
// Safe to call more than once and from any goroutine; it always returns nil.
func (c *Conn) Close(reason error) error {
	var final transport.Frame
	var code quicgo.ApplicationErrorCode
	msg := ""
	var te *transport.Error
	switch {
	case reason == nil:
		final = &transport.Goaway{Reason: "closed"}
	case errors.As(reason, &te):
		if te.Code == 0 { // 0 means graceful on the wire
			te = &transport.Error{Code: transport.ErrCodeInternal, Message: te.Message}
		}
		final, code, msg = te, quicgo.ApplicationErrorCode(te.Code), te.Message
	default:
		final, msg = &transport.Goaway{Reason: reason.Error()}, reason.Error()
	}
	c.end(&closedError{reason: reason}, final, code, truncate(msg, 512))
	<-c.done
	return nil
}

// closedError is the cause of a session closed by this side.
type closedError struct{ reason error }

func (e *closedError) Error() string {
	if e.reason == nil {
		return transport.ErrClosed.Error()
	}
	var te *transport.Error
	if errors.As(e.reason, &te) {
		return transport.ErrClosed.Error() + " with error " + te.CodeName() + ": " + te.Message
	}
	return transport.ErrClosed.Error() + ": " + e.reason.Error()
}

func (e *closedError) Unwrap() []error {
	if e.reason == nil {
		return []error{transport.ErrClosed}
	}
	return []error{transport.ErrClosed, e.reason}
}

// goneError is the cause of a session the peer closed gracefully.
type goneError struct {
	peer, reason string
}

func (e *goneError) Error() string {
	s := transport.ErrClosed.Error() + " by " + e.peer
	if e.reason != "" {
		s += ": " + e.reason
	}
	return s
}

func (e *goneError) Unwrap() error { return transport.ErrClosed }

// end starts ending the session; the first cause wins. final, if not nil, is
// written to the control stream and code and msg go into the QUIC
// CONNECTION_CLOSE, so the peer learns why even if the frame is lost.
func (c *Conn) end(cause error, final transport.Frame, code quicgo.ApplicationErrorCode, msg string) {
	c.mu.Lock()
	if c.cause != nil {
		c.mu.Unlock()
		return
	}
	c.cause, c.final, c.closeCode, c.closeMsg = cause, final, code, msg
	c.mu.Unlock()
	c.cancel()
}

// supervise owns the session's goroutines: when the session starts ending it
// stops them in order, closes the connection and then Done.
func (c *Conn) supervise() {
	select {
	case <-c.ctx.Done():
	case <-c.qc.Context().Done():
		c.end(c.connErr(context.Cause(c.qc.Context())), nil, 0, "")
	}
	c.mu.Lock()
	final, code, msg, cause := c.final, c.closeCode, c.closeMsg, c.cause
	c.mu.Unlock()
	if code == 0 && !errors.Is(cause, transport.ErrClosed) {
		// A failure, not a close: say so on every stripe, so that a peer
		// that first sees another stripe close does not take it for a
		// graceful one.
		code, msg = quicgo.ApplicationErrorCode(transport.ErrCodeInternal), truncate(cause.Error(), 512)
	}

	// Writers flush what is queued, then stop; a peer that does not read
	// gets closeGrace.
	c.lanesMu.Lock()
	c.lanesClosed = true
	senders := []*sender{c.ctl}
	stripes := slices.Clone(c.stripes)
	for _, st := range stripes {
		senders = append(senders, st.lanes...)
		senders = append(senders, st.writers...)
	}
	c.lanesMu.Unlock()
	deadline := time.Now().Add(closeGrace)
	for _, s := range senders {
		if s != nil {
			s.stream.SetWriteDeadline(deadline)
		}
	}
	c.writers.Wait()
	if final != nil && !c.ctl.broken.Load() {
		if buf, err := c.ctl.enc.AppendFrame(nil, final); err == nil {
			if _, err := c.ctlStream.Write(buf); err == nil {
				c.framesSent.Add(1)
				c.wireBytes.Add(int64(len(buf)))
			}
		}
	}
	var closed *closedError
	if errors.As(cause, &closed) && code == 0 && c.qc.Context().Err() == nil {
		// Graceful: finish every stream and give the peer closeGrace to
		// read what is in flight and close the connection itself (or, if
		// it is closing too, to finish its streams).
		for _, s := range senders {
			if s != nil {
				s.stream.Close()
			}
		}
		timer := time.NewTimer(closeGrace)
		c.readers.wait(0, c.qc.Context().Done(), timer.C)
		timer.Stop()
	}
	close(c.stopRead)
	for _, st := range stripes {
		st.qc.CloseWithError(code, msg)
	}
	c.wg.Wait()
	c.ctlDec.Close()
	c.reo.discard()
	if c.cleanup != nil {
		c.cleanup()
	}
	if errors.Is(cause, transport.ErrClosed) {
		c.cfg.log.Debug("session closed", "reason", cause)
	} else {
		c.cfg.log.Info("session ended", "err", cause)
	}
	close(c.done)
}

// connErr explains why the first QUIC connection ended or a stream on it
// failed.
func (c *Conn) connErr(err error) error { return c.connErrOn(c.qc, err) }

// connErrOn explains why QUIC connection qc ended or a stream on it failed.
func (c *Conn) connErrOn(qc *quicgo.Conn, err error) error {
	if cerr := context.Cause(qc.Context()); cerr != nil {
		err = cerr
	}
	var (
		app   *quicgo.ApplicationError
		idle  *quicgo.IdleTimeoutError
		reset *quicgo.StatelessResetError
		te    *quicgo.TransportError
	)
	switch {
	case errors.As(err, &app) && app.Remote:
		if app.ErrorCode == 0 {
			return &goneError{peer: c.peerDesc(), reason: app.ErrorMessage}
		}
		code := uint16(transport.ErrCodeInternal)
		if app.ErrorCode <= math.MaxUint16 {
			code = uint16(app.ErrorCode)
		}
		return fmt.Errorf("%s: %w", c.peerDesc(), &transport.Error{Code: code, Message: app.ErrorMessage})
	case errors.As(err, &idle):
		return fmt.Errorf("%s: no packet for more than %s (peer silent or link down): %w", c.peerDesc(), c.cfg.idleTimeout, err)
	case errors.As(err, &reset):
		return fmt.Errorf("%s: peer no longer knows this connection (restarted?): %w", c.peerDesc(), err)
	case errors.As(err, &te):
		return fmt.Errorf("%s: QUIC connection failed: %w", c.peerDesc(), err)
	}
	return fmt.Errorf("%s: %w", c.peerDesc(), err)
}

// readFailed ends the session after a read error on a stream of stripe st.
func (c *Conn) readFailed(st *stripe, stream string, err error) {
	switch {
	case c.ctx.Err() != nil:
		// Already ending; the error is a consequence.
	case st.idx > 0 && retired(st.qc, err):
		// The stripe was retired; nothing was in flight on it.
	case errors.Is(err, transport.ErrMalformed):
		msg := stream + ": " + err.Error()
		c.end(fmt.Errorf("%s: %s: %w", c.peerDesc(), stream, err), &transport.Error{Code: transport.ErrCodeProtocol, Message: msg},
			quicgo.ApplicationErrorCode(transport.ErrCodeProtocol), truncate(msg, 512))
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		if st.qc.Context().Err() != nil {
			c.end(c.stripeErr(st, err), nil, 0, "")
		} else {
			c.end(&goneError{peer: c.peerDesc(), reason: "closed its " + stream}, nil, 0, "")
		}
	default:
		c.end(c.stripeErr(st, err), nil, 0, "")
	}
}

// stripeErr explains the failure of stripe st; errors of stripes other than
// the first name it, since a stripe's death ends the whole session.
func (c *Conn) stripeErr(st *stripe, err error) error {
	err = c.connErrOn(st.qc, err)
	if st.idx == 0 || errors.Is(err, transport.ErrClosed) {
		return err
	}
	return fmt.Errorf("stripe %d: %w", st.idx, err)
}

// protocolViolation ends the session because the peer broke the protocol.
func (c *Conn) protocolViolation(msg string) {
	c.end(fmt.Errorf("%s: protocol violation: %s", c.peerDesc(), msg), &transport.Error{Code: transport.ErrCodeProtocol, Message: msg},
		quicgo.ApplicationErrorCode(transport.ErrCodeProtocol), truncate(msg, 512))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
