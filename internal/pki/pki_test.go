package pki

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// handshake runs a TLS handshake over loopback TCP and returns the client's
// and the server's errors and the server's view of the client's name.
func handshake(t *testing.T, server, client *tls.Config) (clientErr, serverErr error, peer string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	var srv *tls.Conn
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		srv = tls.Server(c, server)
		err = srv.Handshake()
		if err != nil {
			c.Close()
		}
		done <- err
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	cl := tls.Client(c, client)
	clientErr = cl.Handshake()
	serverErr = <-done
	if clientErr == nil && serverErr != nil {
		// TLS 1.3: the server's verdict on the client certificate arrives
		// after the client's handshake has returned.
		_, clientErr = cl.Read(make([]byte, 1))
	}
	if serverErr == nil {
		peer = PeerName(srv.ConnectionState())
		srv.Close()
	}
	return clientErr, serverErr, peer
}

func TestMutualTLS(t *testing.T) {
	ca, err := NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	hq, err := ca.Issue("hq-a", []string{"localhost", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	v7, err := ca.Issue("v7-a", nil)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := NewCA("other CA", time.Hour)
	rogue, _ := other.Issue("v7-a", nil)

	t.Run("ok", func(t *testing.T) {
		cerr, serr, peer := handshake(t, ca.ServerConfig(hq), ca.ClientConfig(v7, "hq-a"))
		if cerr != nil || serr != nil {
			t.Fatalf("client err %v, server err %v", cerr, serr)
		}
		if peer != "v7-a" {
			t.Errorf("PeerName = %q, want v7-a", peer)
		}
	})
	t.Run("server name by IP", func(t *testing.T) {
		cerr, serr, _ := handshake(t, ca.ServerConfig(hq), ca.ClientConfig(v7, "127.0.0.1"))
		if cerr != nil || serr != nil {
			t.Fatalf("client err %v, server err %v", cerr, serr)
		}
	})
	t.Run("wrong server name", func(t *testing.T) {
		cerr, _, _ := handshake(t, ca.ServerConfig(hq), ca.ClientConfig(v7, "dr-a"))
		if cerr == nil || !strings.Contains(cerr.Error(), "not dr-a") {
			t.Fatalf("client err %v, want a name mismatch", cerr)
		}
	})
	t.Run("client from another CA", func(t *testing.T) {
		cl := other.ClientConfig(rogue, "hq-a")
		cl.RootCAs = ca.Pool() // trusts the server; the server must not trust it
		// crypto/tls clients withhold a certificate that is not from a CA
		// the server lists, so the server sees none.
		_, serr, _ := handshake(t, ca.ServerConfig(hq), cl)
		if serr == nil {
			t.Fatal("server accepted a client certificate from another CA")
		}
	})
	t.Run("no client certificate", func(t *testing.T) {
		cl := ca.ClientConfig(v7, "hq-a")
		cl.Certificates = nil
		_, serr, _ := handshake(t, ca.ServerConfig(hq), cl)
		if serr == nil {
			t.Fatal("server accepted a client without certificate")
		}
	})
	t.Run("TLS 1.2 refused", func(t *testing.T) {
		cl := ca.ClientConfig(v7, "hq-a")
		cl.MinVersion, cl.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
		if cerr, serr, _ := handshake(t, ca.ServerConfig(hq), cl); cerr == nil && serr == nil {
			t.Fatal("TLS 1.2 handshake succeeded")
		}
	})
}

func TestIssueSANs(t *testing.T) {
	ca, _ := NewCA("test CA", time.Hour)
	c, err := ca.Issue("hq-a", []string{"gw1.hq.example", "10.1.2.3", "::1", "10.1.2.3", " "})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Cert.DNSNames, []string{"hq-a", "gw1.hq.example"}; !slices.Equal(got, want) {
		t.Errorf("DNSNames = %v, want %v", got, want)
	}
	if len(c.Cert.IPAddresses) != 2 {
		t.Errorf("IPAddresses = %v, want 10.1.2.3 and ::1", c.Cert.IPAddresses)
	}
	if c.Cert.Subject.CommonName != "hq-a" {
		t.Errorf("CN = %q", c.Cert.Subject.CommonName)
	}
	if !c.Cert.NotAfter.Equal(ca.Cert.NotAfter) {
		t.Errorf("certificate outlives its CA: %v > %v", c.Cert.NotAfter, ca.Cert.NotAfter)
	}
	if _, err := c.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("not valid for client auth: %v", err)
	}
	for _, bad := range []struct{ name, host, want string }{
		{"", "", "empty gateway name"},
		{"../etc", "", `character '/' not allowed`},
		{"ca", "", "reserved"},
		{"ok", "bad host!", `host "bad host!" is neither`},
	} {
		_, err := ca.Issue(bad.name, []string{bad.host})
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("Issue(%q, %q): got %v, want %q", bad.name, bad.host, err, bad.want)
		}
	}
}

func TestGenerateBundleAndLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	err := GenerateBundle(dir, []GatewaySpec{{Name: "hq-a", Loopback: true}, {Name: "v7-a", Hosts: []string{"v7.example"}}})
	if err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]os.FileMode{"ca.crt": 0o644, "ca.key": 0o600, "hq-a.crt": 0o644, "hq-a.key": 0o600, "v7-a.key": 0o600} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode().Perm(), mode)
		}
	}
	f := func(n string) string { return filepath.Join(dir, n) }
	srv, err := ServerTLS(f("ca.crt"), f("hq-a.crt"), f("hq-a.key"))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := ClientTLS(f("ca.crt"), f("v7-a.crt"), f("v7-a.key"), "localhost")
	if err != nil {
		t.Fatal(err)
	}
	if srv.MinVersion != tls.VersionTLS13 || cl.MinVersion != tls.VersionTLS13 || srv.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Errorf("configs not TLS 1.3 mutual: server %+v", srv)
	}
	cerr, serr, peer := handshake(t, srv, cl)
	if cerr != nil || serr != nil || peer != "v7-a" {
		t.Fatalf("client err %v, server err %v, peer %q", cerr, serr, peer)
	}

	// A second run reuses the CA: old and new certificates verify together.
	caBefore, _ := os.ReadFile(f("ca.crt"))
	if err := GenerateBundle(dir, []GatewaySpec{{Name: "dr-a", Loopback: true}}); err != nil {
		t.Fatal(err)
	}
	caAfter, _ := os.ReadFile(f("ca.crt"))
	if string(caBefore) != string(caAfter) {
		t.Error("GenerateBundle replaced an existing CA")
	}
	cl2, err := ClientTLS(f("ca.crt"), f("dr-a.crt"), f("dr-a.key"), "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if cerr, serr, _ := handshake(t, srv, cl2); cerr != nil || serr != nil {
		t.Fatalf("new gateway with reused CA: client err %v, server err %v", cerr, serr)
	}
	ca, err := LoadCA(f("ca.crt"), f("ca.key"))
	if err != nil || ca.Cert.Subject.CommonName != "Meridian CA" {
		t.Fatalf("LoadCA: %v", err)
	}

	if err := GenerateBundle(dir, []GatewaySpec{{Name: "x"}, {Name: "x"}}); err == nil || !strings.Contains(err.Error(), "listed twice") {
		t.Errorf("duplicate gateway: got %v", err)
	}
	os.Remove(f("ca.key"))
	if err := GenerateBundle(dir, []GatewaySpec{{Name: "y"}}); err == nil || !strings.Contains(err.Error(), "or neither") {
		t.Errorf("CA cert without key: got %v", err)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.pem")
	os.WriteFile(junk, []byte("not pem"), 0o600)
	if _, err := ServerTLS(filepath.Join(dir, "missing.crt"), junk, junk); err == nil || !strings.Contains(err.Error(), "missing.crt") {
		t.Errorf("missing CA file: got %v", err)
	}
	if _, err := ServerTLS(junk, junk, junk); err == nil || !strings.Contains(err.Error(), "no PEM CERTIFICATE block") {
		t.Errorf("junk CA file: got %v", err)
	}
	ca, _ := NewCA("c", time.Hour)
	c, _ := ca.Issue("g", nil)
	if err := c.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCA(filepath.Join(dir, "g.crt"), filepath.Join(dir, "g.key")); err == nil || !strings.Contains(err.Error(), "not a CA") {
		t.Errorf("LoadCA of a leaf: got %v", err)
	}
}
