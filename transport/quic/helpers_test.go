package quic

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/internal/pki"
	"github.com/meridian-gw/meridian/transport"
)

// testPKI is one CA with certificates for a few gateways, all valid for
// localhost and 127.0.0.1.
type testPKI struct {
	ca    *pki.CA
	certs map[string]*pki.Cert
}

var (
	pkiOnce   sync.Once
	sharedPKI *testPKI
)

func getPKI(t testing.TB) *testPKI {
	t.Helper()
	pkiOnce.Do(func() {
		ca, err := pki.NewCA("test CA", time.Hour)
		if err != nil {
			panic(err)
		}
		p := &testPKI{ca: ca, certs: map[string]*pki.Cert{}}
		for _, n := range []string{"hq-a", "v7-a", "dr-a"} {
			c, err := ca.Issue(n, []string{"localhost", "127.0.0.1"})
			if err != nil {
				panic(err)
			}
			p.certs[n] = c
		}
		sharedPKI = p
	})
	return sharedPKI
}

func (p *testPKI) server(name string) ListenerOptions {
	return ListenerOptions{TLS: p.ca.ServerConfig(p.certs[name])}
}

func (p *testPKI) client(name, serverName string) DialerOptions {
	return DialerOptions{TLS: p.ca.ClientConfig(p.certs[name], serverName)}
}

// logBuffer is a slog handler target that tests can search.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkGoroutines fails the test if goroutines started during it are still
// running at cleanup (after the test's own cleanups, which run first).
func checkGoroutines(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				n := runtime.Stack(buf, true)
				t.Errorf("goroutine leak: %d running, %d before the test\n%s", runtime.NumGoroutine(), before, buf[:n])
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// session is a dialed session and its accepted peer.
type session struct {
	ln     *Listener
	client *Conn
	server *Conn
}

func listen(t testing.TB, opts ListenerOptions) *Listener {
	t.Helper()
	ln, err := Listen("127.0.0.1:0", opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func dial(t testing.TB, ln *Listener, opts DialerOptions, h *transport.Hello) (*Conn, error) {
	t.Helper()
	d, err := NewDialer(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.Dial(ctx, ln.Addr().String(), h)
	if err != nil {
		return nil, err
	}
	qc := c.(*Conn)
	t.Cleanup(func() { qc.Close(nil) })
	return qc, nil
}

func accept(t testing.TB, ln *Listener) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sc := c.(*Conn)
	t.Cleanup(func() { sc.Close(nil) })
	return sc
}

// newSession dials v7-a → hq-a with the given option tweaks.
func newSession(t testing.TB, lmod func(*ListenerOptions), dmod func(*DialerOptions)) *session {
	t.Helper()
	p := getPKI(t)
	lo := p.server("hq-a")
	if lmod != nil {
		lmod(&lo)
	}
	ln := listen(t, lo)
	do := p.client("v7-a", "hq-a")
	if dmod != nil {
		dmod(&do)
	}
	c, err := dial(t, ln, do, &transport.Hello{Gateway: "v7-a", Region: "vessel-7", Legs: []string{"v7-to-hq"}})
	if err != nil {
		t.Fatal(err)
	}
	return &session{ln: ln, client: c, server: accept(t, ln)}
}

func recv(t testing.TB, c transport.Conn) transport.Frame {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f, err := c.Recv(ctx)
	if err != nil {
		t.Fatalf("recv: %v", err)
	}
	return f
}

func send(t testing.TB, c transport.Conn, f transport.Frame) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Send(ctx, f); err != nil {
		t.Fatalf("send %T: %v", f, err)
	}
}

// blackholeConn is a PacketConn that can be told to drop every packet in
// both directions.
type blackholeConn struct {
	net.PacketConn
	drop atomic.Bool
}

func (c *blackholeConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if c.drop.Load() {
		return len(p), nil
	}
	return c.PacketConn.WriteTo(p, addr)
}

func (c *blackholeConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(p)
		if err != nil || !c.drop.Load() {
			return n, addr, err
		}
	}
}

func mustContain(t testing.TB, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one containing %q", parts)
	}
	t.Logf("error: %v", err)
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Fatalf("error %q does not contain %q", err, p)
		}
	}
}

func key(b *transport.Batch) string { return fmt.Sprintf("%s/%s/%d", b.Leg, b.Topic, b.Partition) }
