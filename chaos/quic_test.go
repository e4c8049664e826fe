package chaos_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/meridian-gw/meridian/chaos"
)

// testTLS returns matching server and client TLS configs for "localhost".
func testTLS(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true,

		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	const alpn = "meridian-chaos-test"
	server = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, NextProtos: []string{alpn}}
	client = &tls.Config{RootCAs: pool, ServerName: "localhost", NextProtos: []string{alpn}}
	return server, client
}

func quicTransport(t *testing.T) *quic.Transport {
	t.Helper()
	conn, err := net.ListenUDP("udp", loopback)
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: conn}
	t.Cleanup(func() {
		tr.Close()
		conn.Close()
	})
	return tr
}

// TestUDPProxyQUIC runs a QUIC connection through the proxy over a lossy
// WAN and echoes a stream end to end.
func TestUDPProxyQUIC(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("short")
	}
	serverTLS, clientTLS := testTLS(t)
	srv := quicTransport(t)
	ln, err := srv.Listen(serverTLS, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	wan, err := chaos.LoadProfile("wan")
	if err != nil {
		t.Fatal(err)
	}
	const loss = 0.02
	px := startProxy(t, chaos.UDPProxyOptions{Target: srv.Conn.LocalAddr().String(), Profile: wan.WithLoss(loss), Seed: 5})

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// Server: echo every stream of the first connection.
	var wg sync.WaitGroup
	defer wg.Wait()
	remote := make(chan net.Addr, 1)
	wg.Go(func() {
		conn, err := ln.Accept(ctx)
		if err != nil {
			return
		}
		remote <- conn.RemoteAddr()
		defer conn.CloseWithError(0, "")
		str, err := conn.AcceptStream(ctx)
		if err != nil {
			return
		}
		_, _ = io.Copy(str, str)
		str.Close()
		<-conn.Context().Done() // until the client closes
	})

	cli := quicTransport(t)
	start := time.Now()
	conn, err := cli.Dial(ctx, px.Addr(), clientTLS, nil)
	if err != nil {
		t.Fatalf("dial through proxy: %v (seed %d)", err, px.Seed())
	}
	defer conn.CloseWithError(0, "")
	handshake := time.Since(start)
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 256<<10)
	_, _ = rand.Read(want)
	wg.Go(func() {
		_, _ = str.Write(want)
		str.Close()
	})
	got, err := io.ReadAll(str)
	if err != nil {
		t.Fatalf("read echo: %v (seed %d)", err, px.Seed())
	}
	el := time.Since(start)
	if !bytes.Equal(got, want) {
		t.Fatalf("echo: got %d bytes, want the %d sent", len(got), len(want))
	}
	if addr := <-remote; addr.String() == cli.Conn.LocalAddr().String() {
		t.Errorf("server saw the client's own address %v, want the proxy's upstream socket", addr)
	}
	st := px.Stats()
	t.Logf("QUIC through wan with %.0f%% loss each way: handshake %v, 256KiB echoed in %v; up %d pkts (%d lost), down %d pkts (%d lost)",
		100*loss, handshake.Round(time.Millisecond), el.Round(time.Millisecond), st.Up.Packets, st.Up.Dropped.Loss, st.Down.Packets, st.Down.Dropped.Loss)
	if st.Up.Dropped.Loss+st.Down.Dropped.Loss == 0 {
		t.Errorf("no packets lost; the profile was not applied (seed %d)", px.Seed())
	}
	if handshake < wan.RTT() {
		t.Errorf("handshake took %v, faster than one RTT (%v)", handshake, wan.RTT())
	}
}
