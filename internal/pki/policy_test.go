package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// forge signs, with ca, a certificate for name carrying the given URI SANs
// (what a CA operator's mistake or an old tool could produce).
func forge(t *testing.T, ca *CA, name string, uris ...string) *Cert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:    []string{name},
	}
	for _, u := range uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &Cert{Cert: cert, Key: key, certDER: der}
}

func TestIssueWritesGatewayURI(t *testing.T) {
	ca, err := NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ca.Issue("v7-a", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Cert.URIs) != 1 || c.Cert.URIs[0].String() != "meridian://gateway/v7-a" {
		t.Errorf("URI SANs = %v, want [meridian://gateway/v7-a]", c.Cert.URIs)
	}
}

// The policy refuses, on the listener and on the dialer alike, a
// certificate whose URI SAN names another gateway, one without the SAN
// when require_san is set, a revoked serial and a CRL-listed certificate.
func TestPolicyRefusesOnBothEnds(t *testing.T) {
	ca, err := NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	hq, err := ca.Issue("hq-a", []string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	good, err := ca.Issue("v7-a", nil)
	if err != nil {
		t.Fatal(err)
	}
	revoked, err := ca.Issue("v7-a", nil)
	if err != nil {
		t.Fatal(err)
	}
	listed, err := ca.Issue("v7-a", nil)
	if err != nil {
		t.Fatal(err)
	}
	wrongSAN := forge(t, ca, "v7-a", "meridian://gateway/hq-a")
	noSAN := forge(t, ca, "v7-a")
	crlPath := filepath.Join(t.TempDir(), "fleet.crl")
	if err := ca.RevokeFile(crlPath, listed.Cert.SerialNumber); err != nil {
		t.Fatal(err)
	}
	if err := ca.WriteFiles(filepath.Dir(crlPath)); err != nil {
		t.Fatal(err)
	}
	crl, err := LoadCRL(crlPath, filepath.Join(filepath.Dir(crlPath), CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	policy := &Policy{RequireSAN: true, Revoked: []*big.Int{revoked.Cert.SerialNumber}, CRL: crl}
	for _, c := range []struct {
		name string
		cert *Cert
		want string // "" accepted
	}{
		{"good", good, ""},
		{"wrong SAN", wrongSAN, "does not name gateway"},
		{"no SAN", noSAN, "no meridian://gateway/v7-a URI SAN"},
		{"revoked serial", revoked, "revoked (tls.revoked_serials)"},
		{"CRL-listed", listed, "revoked (tls.crl)"},
	} {
		t.Run("listener/"+c.name, func(t *testing.T) {
			srv := ca.ServerConfig(hq)
			policy.Apply(srv)
			_, serr, _ := handshake(t, srv, ca.ClientConfig(c.cert, "hq-a"))
			check(t, serr, c.want)
		})
		t.Run("dialer/"+c.name, func(t *testing.T) {
			cl := ca.ClientConfig(hq, "v7-a")
			policy.Apply(cl)
			cerr, _, _ := handshake(t, ca.ServerConfig(c.cert), cl)
			check(t, cerr, c.want)
		})
	}
	// Without require_san, a certificate of an older tool (no SAN) passes,
	// one whose SAN names another gateway does not.
	lax := &Policy{}
	if err := lax.Check(noSAN.Cert); err != nil {
		t.Errorf("no SAN, require_san off: %v", err)
	}
	if err := lax.Check(wrongSAN.Cert); err == nil {
		t.Error("a SAN naming another gateway passed with require_san off")
	}
}

func check(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatalf("refused: %v", err)
	case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
		t.Fatalf("got %v, want a refusal saying %q", err, want)
	}
}

func TestParseSerialAndCRLErrors(t *testing.T) {
	for in, want := range map[string]int64{"3f:a2": 0x3fa2, "3FA2": 0x3fa2, "f": 15} {
		got, err := ParseSerial(in)
		if err != nil || got.Int64() != want {
			t.Errorf("ParseSerial(%q) = %v, %v; want %d", in, got, err, want)
		}
	}
	if _, err := ParseSerial("zz"); err == nil || !strings.Contains(err.Error(), "not hex") {
		t.Errorf("ParseSerial(zz) err = %v, want not hex", err)
	}
	dir := t.TempDir()
	ca, _ := NewCA("test CA", time.Hour)
	other, _ := NewCA("other CA", time.Hour)
	if err := ca.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(dir, "foreign.crl")
	if err := other.RevokeFile(foreign, big.NewInt(1)); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCRL(foreign, filepath.Join(dir, CACertFile)); err == nil || !strings.Contains(err.Error(), "not signed by the CA") {
		t.Errorf("CRL of another CA: err = %v", err)
	}
	if _, err := LoadCRL(filepath.Join(dir, CACertFile), filepath.Join(dir, CACertFile)); err == nil || !strings.Contains(err.Error(), "want \"X509 CRL\"") {
		t.Errorf("a certificate as CRL: err = %v", err)
	}
}

// An operator certificate (the admin API's client) passes the policy with
// its meridian://operator/NAME SAN, even under require_san, and is revoked
// by the same serial list as a gateway's; a forged operator SAN on another
// name is refused.
func TestPolicyTakesOperatorCertificates(t *testing.T) {
	ca, err := NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	op, err := ca.IssueOperator("alice")
	if err != nil {
		t.Fatal(err)
	}
	p := &Policy{RequireSAN: true}
	check(t, p.Check(op.Cert), "")
	p.Revoked = []*big.Int{op.Cert.SerialNumber}
	check(t, p.Check(op.Cert), "revoked")
	check(t, (&Policy{}).Check(forge(t, ca, "operator:mallory", "meridian://operator/alice").Cert), "does not name")
	check(t, (&Policy{}).Check(forge(t, ca, "hq-a", "meridian://operator/hq-a").Cert), "does not name")
}
