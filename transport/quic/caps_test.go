package quic

import (
	"context"
	"errors"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/meridian-gw/meridian/transport"
)

// holdHandshake opens a QUIC connection to ln that completes TLS and then
// sends nothing, so that it holds one of the listener's handshake slots
// until the handshake timeout.
func holdHandshake(t *testing.T, p *testPKI, ln *Listener) {
	t.Helper()
	tc := p.client("v7-a", "hq-a").TLS.Clone()
	tc.NextProtos = []string{ALPN}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	qc, err := quicgo.DialAddr(ctx, ln.Addr().String(), tc, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { qc.CloseWithError(0, "") })
}

// wantLimit checks that err is a refusal with transport.ErrCodeLimit: an
// Error frame, or a CONNECTION_CLOSE with that code.
func wantLimit(t *testing.T, what string, err error) {
	t.Helper()
	var re *RefusedError
	var app *quicgo.ApplicationError
	switch {
	case err == nil:
		t.Fatalf("%s: dial succeeded, want a refusal with code limit", what)
	case errors.As(err, &re):
		if re.Err.Code != transport.ErrCodeLimit {
			t.Fatalf("%s: refused with code %d (%v), want %d", what, re.Err.Code, err, transport.ErrCodeLimit)
		}
	case errors.As(err, &app):
		if app.ErrorCode != quicgo.ApplicationErrorCode(transport.ErrCodeLimit) {
			t.Fatalf("%s: closed with code %d (%v), want %d", what, app.ErrorCode, err, transport.ErrCodeLimit)
		}
	default:
		t.Fatalf("%s: %v, want a refusal with code limit", what, err)
	}
}

// TestListenerCaps fills each cap of a listener and checks that the next
// connection is refused with ErrCodeLimit and counted, and that a slot
// freed is usable again.
func TestListenerCaps(t *testing.T) {
	p := getPKI(t)
	hello := func() *transport.Hello { return &transport.Hello{Gateway: "v7-a", Legs: []string{"l"}} }

	t.Run("sessions per peer", func(t *testing.T) {
		lo := p.server("hq-a")
		lo.MaxSessionsPerPeer = 2
		ln := listen(t, lo)
		var conns []*Conn
		for range 2 {
			c, err := dial(t, ln, p.client("v7-a", "hq-a"), hello())
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
			accept(t, ln)
		}
		_, err := dial(t, ln, p.client("v7-a", "hq-a"), hello())
		wantLimit(t, "third session", err)
		mustContain(t, err, "2 sessions open")
		if n := ln.Refused(CapSessionsPerPeer); n != 1 {
			t.Errorf("refused{cap=%s} = %d, want 1", CapSessionsPerPeer, n)
		}
		// Another peer is not affected.
		if _, err := dial(t, ln, p.client("dr-a", "hq-a"), &transport.Hello{Gateway: "dr-a"}); err != nil {
			t.Fatalf("another peer: %v", err)
		}
		accept(t, ln)
		conns[0].Close(nil)
		waitFor(t, 10*time.Second, "a freed session slot", func() bool {
			c, err := dial(t, ln, p.client("v7-a", "hq-a"), hello())
			if err == nil {
				c.Close(nil)
			}
			return err == nil
		})
	})

	for _, c := range []struct {
		cap  string
		opts func(*ListenerOptions)
	}{
		{CapHandshakes, func(o *ListenerOptions) { o.MaxHandshakes = 1 }},
		{CapHandshakesPerAddr, func(o *ListenerOptions) { o.MaxHandshakesPerAddr = 1 }},
	} {
		t.Run(c.cap, func(t *testing.T) {
			lo := p.server("hq-a")
			c.opts(&lo)
			lo.HandshakeTimeout = 2 * time.Second
			ln := listen(t, lo)
			holdHandshake(t, p, ln)
			waitFor(t, 5*time.Second, "the held handshake", func() bool {
				ln.mu.Lock()
				defer ln.mu.Unlock()
				return ln.caps.inHandshake == 1
			})
			_, err := dial(t, ln, p.client("v7-a", "hq-a"), hello())
			wantLimit(t, "a dial while the slot is held", err)
			if n := ln.Refused(c.cap); n != 1 {
				t.Errorf("refused{cap=%s} = %d, want 1", c.cap, n)
			}
			// The held handshake times out; then a dial gets through.
			waitFor(t, 10*time.Second, "a freed handshake slot", func() bool {
				ln.mu.Lock()
				defer ln.mu.Unlock()
				return ln.caps.inHandshake == 0
			})
			if _, err := dial(t, ln, p.client("v7-a", "hq-a"), hello()); err != nil {
				t.Fatalf("after the held handshake ended: %v", err)
			}
		})
	}
}
