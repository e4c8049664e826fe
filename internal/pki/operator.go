package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// OperatorPrefix starts the Common Name of an operator certificate:
// "operator:NAME". Gateway names cannot contain ':', so no gateway
// certificate can pass for one.
const OperatorPrefix = "operator:"

// IssueOperator signs a client certificate for the person or tool name,
// for the gateways' admin APIs (admin.mtls): Common Name "operator:NAME",
// URI SAN meridian://operator/NAME, client authentication only.
func (ca *CA) IssueOperator(name string) (*Cert, error) {
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("issue operator certificate: %s", strings.Replace(err.Error(), "gateway name", "operator name", 1))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("issue operator certificate for %s: generate key: %w", name, err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("issue operator certificate for %s: %w", name, err)
	}
	validity := ca.CertValidity
	if validity <= 0 {
		validity = DefaultCertValidity
	}
	now := time.Now()
	notAfter := now.Add(validity)
	if ca.Cert.NotAfter.Before(notAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: OperatorPrefix + name, Organization: []string{"Meridian"}},
		NotBefore:    now.Add(-5 * time.Minute),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{{Scheme: "meridian", Host: "operator", Path: "/" + name}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("issue operator certificate for %s: sign: %w", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("issue operator certificate for %s: %w", name, err)
	}
	return &Cert{Cert: cert, Key: key, certDER: der}, nil
}

// OperatorName returns NAME for an operator certificate (Common Name
// "operator:NAME", good for client authentication), or false. The caller
// has verified the certificate against the fleet CA.
func OperatorName(c *x509.Certificate) (string, bool) {
	if c == nil {
		return "", false
	}
	name, ok := strings.CutPrefix(c.Subject.CommonName, OperatorPrefix)
	if !ok || checkName(name) != nil || !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		return "", false
	}
	return name, true
}

// OperatorFiles are the file names WriteOperatorFiles uses in dir:
// operator-NAME.crt and operator-NAME.key.
func OperatorFiles(dir, name string) (certFile, keyFile string) {
	base := filepath.Join(dir, "operator-"+name)
	return base + ".crt", base + ".key"
}

// WriteOperatorFiles writes an operator certificate (from IssueOperator)
// to OperatorFiles(dir, name), the key with mode 0600.
func (c *Cert) WriteOperatorFiles(dir string) error {
	name, ok := OperatorName(c.Cert)
	if !ok {
		return fmt.Errorf("write operator certificate files: %q is not an operator certificate", c.Cert.Subject.CommonName)
	}
	kp, err := c.KeyPEM()
	if err != nil {
		return fmt.Errorf("write operator certificate files for %s: %w", name, err)
	}
	certFile, keyFile := OperatorFiles(dir, name)
	return writePair(dir, filepath.Base(certFile), c.CertPEM(), filepath.Base(keyFile), kp)
}
