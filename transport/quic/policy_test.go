package quic

import (
	"context"
	"crypto/tls"
	"math/big"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/internal/pki"
	"github.com/meridian-gw/meridian/transport"
)

// A revoked certificate cannot open a session: the listener's policy
// refuses a revoked sender, the dialer's a revoked receiver.
func TestRevokedCertificateCannotConnect(t *testing.T) {
	p := getPKI(t)
	revoke := func(name string) *pki.Policy {
		return &pki.Policy{Revoked: []*big.Int{p.certs[name].Cert.SerialNumber}}
	}
	t.Run("listener", func(t *testing.T) {
		lo := p.server("hq-a")
		revoke("v7-a").Apply(lo.TLS)
		ln := listen(t, lo)
		_, err := dial(t, ln, p.client("v7-a", "hq-a"), &transport.Hello{Gateway: "v7-a"})
		mustContain(t, err, "the peer refused this gateway's certificate")
		if _, err := dial(t, ln, p.client("dr-a", "hq-a"), &transport.Hello{Gateway: "dr-a"}); err != nil {
			t.Fatalf("a gateway not revoked: %v", err)
		}
	})
	t.Run("dialer", func(t *testing.T) {
		ln := listen(t, p.server("hq-a"))
		do := p.client("v7-a", "hq-a")
		revoke("hq-a").Apply(do.TLS)
		_, err := dial(t, ln, do, &transport.Hello{Gateway: "v7-a"})
		mustContain(t, err, `certificate "hq-a"`, "is revoked (tls.revoked_serials)")
	})
}

// A sender revoked after it got a session ticket cannot use the ticket
// (resumption, 0-RTT data) to reach Accept: crypto/tls runs the listener's
// VerifyConnection, and so its policy, on resumed handshakes too.
func TestRevokedCertificateGetsNoZeroRTTAccept(t *testing.T) {
	p := getPKI(t)
	var revoked atomic.Bool
	policy := revokeWhen(&revoked, p.certs["v7-a"].Cert.SerialNumber)
	lo := p.server("hq-a")
	lo.TLS.VerifyConnection = policy
	var accepts atomic.Int32
	lo.Accept = func(*transport.Hello) (*transport.Welcome, error) {
		accepts.Add(1)
		return &transport.Welcome{}, nil
	}
	ln := listen(t, lo)
	d, err := NewDialer(p.client("v7-a", "hq-a"))
	if err != nil {
		t.Fatal(err)
	}
	c1, _ := dialWith(t, d, ln)
	if c1 == nil {
		t.Fatal("first dial failed")
	}
	accept(t, ln)
	c1.Close(nil)
	revoked.Store(true)
	before := accepts.Load()
	c2, err := dialWith(t, d, ln)
	if err == nil && c2 != nil && c2.qc.ConnectionState().Used0RTT {
		t.Log("the redial sent 0-RTT data")
	}
	if got := accepts.Load() - before; got != 0 {
		t.Errorf("Accept saw %d Hellos of the revoked gateway", got)
	}
	if err == nil {
		// The session may only end: a revoked gateway gets nothing served.
		select {
		case <-c2.Done():
		case <-t.Context().Done():
		}
	}
}

// dialWith dials ln with d (one dialer keeps its session tickets).
func dialWith(t *testing.T, d *Dialer, ln *Listener) (*Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.Dial(ctx, ln.Addr().String(), &transport.Hello{Gateway: "v7-a"})
	if err != nil {
		return nil, err
	}
	qc := c.(*Conn)
	t.Cleanup(func() { qc.Close(nil) })
	return qc, nil
}

func revokeWhen(on *atomic.Bool, serial *big.Int) func(tls.ConnectionState) error {
	policy := &pki.Policy{Revoked: []*big.Int{serial}}
	return func(cs tls.ConnectionState) error {
		if !on.Load() || len(cs.PeerCertificates) == 0 {
			return nil
		}
		return policy.Check(cs.PeerCertificates[0])
	}
}
