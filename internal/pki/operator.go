package pki

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
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
	c, err := ca.sign(&x509.Certificate{
		Subject:     pkix.Name{CommonName: OperatorPrefix + name, Organization: []string{"Meridian"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{{Scheme: "meridian", Host: "operator", Path: "/" + name}},
	})
	if err != nil {
		return nil, fmt.Errorf("issue operator certificate for %s: %w", name, err)
	}
	return c, nil
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
