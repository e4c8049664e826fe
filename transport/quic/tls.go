package quic

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// clientTLS prepares the dialer's TLS config: it offers protos (ALPN, best
// first).
func clientTLS(base *tls.Config, protos []string) (*tls.Config, error) {
	if base == nil {
		return nil, errors.New("DialerOptions.TLS is nil: links use mutual TLS")
	}
	if len(base.Certificates) == 0 && base.GetClientCertificate == nil {
		return nil, errors.New("DialerOptions.TLS has no client certificate: links use mutual TLS")
	}
	c := base.Clone()
	c.MinVersion = tls.VersionTLS13
	c.MaxVersion = 0
	c.NextProtos = protos
	return c, nil
}

// serverTLS prepares the listener's TLS config. Client certificates are
// requested without a list of acceptable CAs and verified in
// VerifyConnection: a client whose certificate comes from another CA then
// still presents it (crypto/tls clients withhold certificates the server did
// not ask for), and the listener can log exactly why it was refused, with the
// client's address. The listener accepts protos (ALPN), preferring the first.
//
// Session tickets (for resumption and 0-RTT) are encrypted with keys that
// crypto/tls makes for the returned config and rotates; they live as long as
// the Listener, so a restarted listener resumes no session and takes no
// 0-RTT data (the dialer falls back to a full handshake).
func serverTLS(base *tls.Config, log *slog.Logger, protos []string) (*tls.Config, error) {
	if base == nil {
		return nil, errors.New("ListenerOptions.TLS is nil: links use mutual TLS")
	}
	if base.ClientCAs == nil {
		return nil, errors.New("ListenerOptions.TLS.ClientCAs is nil: links use mutual TLS and need the CA that signs gateway certificates")
	}
	if len(base.Certificates) == 0 && base.GetCertificate == nil && base.GetConfigForClient == nil {
		return nil, errors.New("ListenerOptions.TLS has no certificate")
	}
	roots := base.ClientCAs
	userVerify := base.VerifyConnection
	userGetConfig := base.GetConfigForClient

	perConn := base.Clone()
	perConn.MinVersion = tls.VersionTLS13
	perConn.MaxVersion = 0
	perConn.NextProtos = protos
	perConn.ClientAuth = tls.RequestClientCert
	perConn.ClientCAs = nil
	perConn.GetConfigForClient = nil
	perConn.VerifyConnection = nil

	limiter := &logLimiter{every: time.Second}
	outer := perConn.Clone()
	outer.GetConfigForClient = func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
		remote := "unknown address"
		if chi.Conn != nil && chi.Conn.RemoteAddr() != nil {
			remote = chi.Conn.RemoteAddr().String()
		}
		c := perConn
		if userGetConfig != nil {
			uc, err := userGetConfig(chi)
			if err != nil {
				return nil, err
			}
			if uc != nil {
				c = uc
			}
		}
		c = c.Clone()
		c.MinVersion = tls.VersionTLS13
		c.NextProtos = protos
		c.ClientAuth = tls.RequestClientCert
		c.ClientCAs = nil
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			err := verifyClient(cs, roots)
			if err == nil && userVerify != nil {
				err = userVerify(cs)
			}
			if err != nil {
				limiter.log(log, "refused TLS client", "remote", remote, "err", err)
			}
			return err
		}
		return c, nil
	}
	return outer, nil
}

// verifyClient checks the client's certificate chain against roots for
// client authentication.
func verifyClient(cs tls.ConnectionState, roots *x509.CertPool) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("client presented no certificate")
	}
	leaf := cs.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return fmt.Errorf("client certificate %q (issued by %q) not trusted: %w", leaf.Subject.CommonName, leaf.Issuer.CommonName, err)
	}
	return nil
}

// ownName returns the Common Name of the first certificate in c, if it can be
// read without a handshake.
func ownName(c *tls.Config) string {
	if len(c.Certificates) == 0 {
		return ""
	}
	cert := c.Certificates[0]
	if cert.Leaf != nil {
		return cert.Leaf.Subject.CommonName
	}
	if len(cert.Certificate) == 0 {
		return ""
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return ""
	}
	return leaf.Subject.CommonName
}

// logLimiter logs at warning level at most once per period and at debug
// level otherwise, counting what it demoted.
type logLimiter struct {
	every time.Duration

	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (l *logLimiter) log(log *slog.Logger, msg string, args ...any) {
	l.mu.Lock()
	now := time.Now()
	warn := now.Sub(l.last) >= l.every
	n := l.suppressed
	if warn {
		l.last, l.suppressed = now, 0
	} else {
		l.suppressed++
	}
	l.mu.Unlock()
	if !warn {
		log.Debug(msg, args...)
		return
	}
	if n > 0 {
		args = append(args, "similar_since_last", n)
	}
	log.Warn(msg, args...)
}
