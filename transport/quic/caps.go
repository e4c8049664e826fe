package quic

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	quicgo "github.com/quic-go/quic-go"

	"github.com/meridian-gw/meridian/transport"
)

// caps holds what a Listener's peers have open against its caps
// (ListenerOptions.MaxHandshakes and the others). Its counts are guarded
// by the Listener's mu.
type caps struct {
	handshakes, perAddr, perPeer int

	inHandshake int
	refusing    int            // refused connections waiting to be closed (refuseOver)
	byAddr      map[string]int // handshakes in progress by remote IP
	byPeer      map[string]int // live sessions by peer gateway name
	refused     *prometheus.CounterVec
}

func newCaps(o *ListenerOptions) (*caps, error) {
	c := &caps{
		handshakes: o.MaxHandshakes, perAddr: o.MaxHandshakesPerAddr, perPeer: o.MaxSessionsPerPeer,
		byAddr: map[string]int{}, byPeer: map[string]int{},
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_link_refused_total",
			Help: "Connections the link listener closed with error code limit (8), by the cap they were over.",
		}, []string{"cap"}),
	}
	if c.handshakes <= 0 {
		c.handshakes = DefaultMaxHandshakes
	}
	if c.perAddr <= 0 {
		c.perAddr = DefaultMaxHandshakesPerAddr
	}
	if c.perPeer <= 0 {
		c.perPeer = DefaultMaxSessionsPerPeer
	}
	if o.Registerer != nil {
		if err := o.Registerer.Register(c.refused); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, fmt.Errorf("register meridian_link_refused_total: %w", err)
			}
			c.refused = are.ExistingCollector.(*prometheus.CounterVec)
		}
	}
	return c, nil
}

// addrKey is the IP address of a remote address (the port varies per
// connection).
func addrKey(a net.Addr) string {
	if u, ok := a.(*net.UDPAddr); ok {
		return u.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// startHandshake admits a new connection to its handshake, or returns the
// cap it is over. Every admitted one is ended by endHandshake.
func (l *Listener) startHandshake(addr string) (over string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.caps
	switch {
	case c.inHandshake >= c.handshakes:
		return CapHandshakes
	case c.byAddr[addr] >= c.perAddr:
		return CapHandshakesPerAddr
	}
	c.inHandshake++
	c.byAddr[addr]++
	return ""
}

func (l *Listener) endHandshake(addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.caps
	c.inHandshake--
	if c.byAddr[addr]--; c.byAddr[addr] <= 0 {
		delete(c.byAddr, addr)
	}
}

// maxRefusing caps the connections refused over a cap that wait for
// their TLS handshake, and refuseWait how long each waits.
const (
	maxRefusing = 64
	refuseWait  = 2 * time.Second
)

// refuseOver closes qc, over cap, with ErrCodeLimit and counts it. A code
// sent before the TLS handshake has completed reaches the client only as
// a generic APPLICATION_ERROR (RFC 9000, 10.2.3), so up to maxRefusing
// connections at once wait up to refuseWait for it on goroutines the
// listener owns; the rest are closed at once.
func (l *Listener) refuseOver(qc *quicgo.Conn, cap, msg string) {
	l.caps.refused.WithLabelValues(cap).Inc()
	l.log.Warn("refused connection over a cap", "cap", cap, "remote", qc.RemoteAddr().String(), "reason", msg)
	closeLimit := func() { qc.CloseWithError(quicgo.ApplicationErrorCode(transport.ErrCodeLimit), msg) }
	l.mu.Lock()
	wait := l.caps.refusing < maxRefusing
	if wait {
		l.caps.refusing++
	}
	l.mu.Unlock()
	if !wait {
		closeLimit()
		return
	}
	l.wg.Go(func() {
		defer func() {
			l.mu.Lock()
			l.caps.refusing--
			l.mu.Unlock()
		}()
		t := time.NewTimer(refuseWait)
		defer t.Stop()
		select {
		case <-qc.HandshakeComplete():
		case <-qc.Context().Done():
		case <-t.C:
		case <-l.ctx.Done():
		}
		closeLimit()
	})
}

// Refused returns how many connections the listener refused over cap.
func (l *Listener) Refused(cap string) int64 {
	var m dto.Metric
	if err := l.caps.refused.WithLabelValues(cap).Write(&m); err != nil {
		return 0
	}
	return int64(m.GetCounter().GetValue())
}
