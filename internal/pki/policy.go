package pki

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"strings"
)

// SANScheme is the scheme of the URI SAN that Issue writes into gateway
// certificates: meridian://gateway/NAME.
const SANScheme = "meridian"

// GatewayURI is the URI SAN of gateway name's certificate.
func GatewayURI(name string) *url.URL {
	return &url.URL{Scheme: SANScheme, Host: "gateway", Path: "/" + name}
}

// Policy is what a gateway checks in a peer's certificate beyond the CA's
// signature: the meridian URI SAN and revocation. The zero value checks the
// SAN when present and revokes nothing. Apply installs it on a tls.Config
// (listener and dialer alike).
type Policy struct {
	// RequireSAN refuses certificates without a meridian://gateway/NAME
	// URI SAN. Without it, a certificate that has one must still match its
	// Common Name.
	RequireSAN bool
	// Revoked holds serial numbers refused whoever signed them.
	Revoked []*big.Int
	// CRL, when not nil, refuses the serials it lists. LoadCRL checks its
	// signature against the fleet CA.
	CRL *x509.RevocationList
}

// Check checks a peer's leaf certificate against the policy.
func (p *Policy) Check(leaf *x509.Certificate) error {
	name := leaf.Subject.CommonName
	found := false
	for _, u := range leaf.URIs {
		if u.Scheme != SANScheme {
			continue
		}
		found = true
		switch path := strings.TrimPrefix(u.Path, "/"); {
		case u.Host == "gateway" && path == name:
		case u.Host == "operator" && OperatorPrefix+path == name:
			// An operator certificate (IssueOperator): the admin API's
			// clients, revocable by the same lists as gateways.
		default:
			return fmt.Errorf("certificate %q (serial %s): URI SAN %q does not name gateway or operator %q", name, SerialString(leaf.SerialNumber), u, name)
		}
	}
	if !found && p.RequireSAN {
		return fmt.Errorf("certificate %q (serial %s) has no %s URI SAN and tls.require_san is set; reissue it with `meridian certs`",
			name, SerialString(leaf.SerialNumber), GatewayURI(name))
	}
	for _, s := range p.Revoked {
		if s.Cmp(leaf.SerialNumber) == 0 {
			return fmt.Errorf("certificate %q (serial %s) is revoked (tls.revoked_serials)", name, SerialString(leaf.SerialNumber))
		}
	}
	if p.CRL != nil {
		for _, e := range p.CRL.RevokedCertificateEntries {
			if e.SerialNumber != nil && e.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
				return fmt.Errorf("certificate %q (serial %s) is revoked (tls.crl)", name, SerialString(leaf.SerialNumber))
			}
		}
	}
	return nil
}

// Apply makes c check the peer's certificate against p (in
// VerifyConnection, after crypto/tls's own verification and any
// VerifyConnection c already had). It changes c in place.
func (p *Policy) Apply(c *tls.Config) {
	prev := c.VerifyConnection
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if prev != nil {
			if err := prev(cs); err != nil {
				return err
			}
		}
		if len(cs.PeerCertificates) == 0 {
			return nil // the other checks refuse a missing certificate
		}
		return p.Check(cs.PeerCertificates[0])
	}
}

// SerialString writes a serial number as hex bytes joined by colons, as
// openssl prints it.
func SerialString(n *big.Int) string {
	b := n.Bytes()
	parts := make([]string, len(b))
	for i, x := range b {
		parts[i] = fmt.Sprintf("%02x", x)
	}
	if len(parts) == 0 {
		return "00"
	}
	return strings.Join(parts, ":")
}

// ParseSerial reads a serial number written in hex, with or without colons
// (as SerialString and openssl print it).
func ParseSerial(s string) (*big.Int, error) {
	h := strings.ReplaceAll(strings.TrimSpace(s), ":", "")
	if h == "" {
		return nil, errors.New("empty serial number")
	}
	if len(h)%2 == 1 {
		h = "0" + h
	}
	b, err := hex.DecodeString(h)
	if err != nil {
		return nil, fmt.Errorf("serial number %q is not hex (write it as openssl prints it, e.g. 3f:a2:19)", s)
	}
	return new(big.Int).SetBytes(b), nil
}

// LoadCRL reads a certificate revocation list (PEM "X509 CRL" or DER) and
// checks that the fleet CA in caFile signed it.
func LoadCRL(path, caFile string) (*x509.RevocationList, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read CRL: %w", err)
	}
	der := data
	if blk, _ := pem.Decode(data); blk != nil {
		if blk.Type != "X509 CRL" {
			return nil, fmt.Errorf("CRL %s: PEM block is %q, want \"X509 CRL\"", path, blk.Type)
		}
		der = blk.Bytes
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("CRL %s: %w", path, err)
	}
	certs, err := readCertFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("CRL %s: %w", path, err)
	}
	var sigErr error
	for _, der := range certs {
		ca, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("CRL %s: CA %s: %w", path, caFile, err)
		}
		if sigErr = crl.CheckSignatureFrom(ca); sigErr == nil {
			return crl, nil
		}
	}
	return nil, fmt.Errorf("CRL %s is not signed by the CA in %s: %w", path, caFile, sigErr)
}

// RevokeFile writes a CRL signed by ca that lists serials (tests and
// runbooks; PEM).
func (ca *CA) RevokeFile(path string, serials ...*big.Int) error {
	tmpl := &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: ca.Cert.NotBefore, NextUpdate: ca.Cert.NotAfter}
	for _, s := range serials {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: ca.Cert.NotBefore})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		return fmt.Errorf("create CRL: %w", err)
	}
	return writeFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), 0o644)
}
