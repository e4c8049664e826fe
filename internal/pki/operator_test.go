package pki

import (
	"crypto/x509"
	"os"
	"testing"
)

func TestOperatorCertificate(t *testing.T) {
	ca, err := NewCA("test CA", 0)
	if err != nil {
		t.Fatal(err)
	}
	op, err := ca.IssueOperator("alice")
	if err != nil {
		t.Fatal(err)
	}
	if got := op.Cert.Subject.CommonName; got != "operator:alice" {
		t.Errorf("Common Name %q, want operator:alice", got)
	}
	if len(op.Cert.URIs) != 1 || op.Cert.URIs[0].String() != "meridian://operator/alice" {
		t.Errorf("URI SANs %v, want meridian://operator/alice", op.Cert.URIs)
	}
	if _, err := op.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("operator certificate does not verify for client auth: %v", err)
	}
	if _, err := op.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool()}); err == nil {
		t.Errorf("operator certificate verifies for server auth, want client only")
	}
	if name, ok := OperatorName(op.Cert); !ok || name != "alice" {
		t.Errorf("OperatorName = %q, %v; want alice, true", name, ok)
	}
	site, err := ca.Issue("vessel-7", nil)
	if err != nil {
		t.Fatal(err)
	}
	if name, ok := OperatorName(site.Cert); ok {
		t.Errorf("a gateway certificate passes for operator %q", name)
	}
	if _, err := ca.IssueOperator("bad:name"); err == nil {
		t.Errorf("IssueOperator accepted a name with ':'")
	}
	dir := t.TempDir()
	if err := op.WriteOperatorFiles(dir); err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := OperatorFiles(dir, "alice")
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file %s: %v, mode %v; want 0600", keyFile, err, fi.Mode())
	}
	if err := ca.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := ClientTLS(dir+"/"+CACertFile, certFile, keyFile, ""); err != nil {
		t.Errorf("written operator files do not load: %v", err)
	}
	if err := site.WriteOperatorFiles(dir); err == nil {
		t.Errorf("WriteOperatorFiles took a gateway certificate")
	}
}
