// Package pki issues and loads the certificates that gateways use for mutual
// TLS on their links: one private CA per deployment, one certificate per
// gateway whose Common Name is the gateway's name. Keys are ECDSA P-256, TLS
// is 1.3 only.
//
// A gateway certificate is good for both ends of a link (server and client
// authentication), and the gateway name is also a DNS SAN, so a dialer may set
// tls.Config.ServerName to the peer gateway's name. The receiving side reads
// the sender's verified name with PeerName and checks it against the name the
// sender claims in its Hello (transport/quic does this). Issue also writes
// the URI SAN meridian://gateway/NAME; a Policy (Apply) checks it on both
// ends of a link and refuses revoked serials (a deny list, a CRL).
//
// Files are PEM: ca.crt and ca.key for the CA, <gateway>.crt and <gateway>.key
// per gateway (GenerateBundle). Private keys are written with mode 0600.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Default validity periods.
const (
	DefaultCAValidity   = 10 * 365 * 24 * time.Hour
	DefaultCertValidity = 2 * 365 * 24 * time.Hour
)

// File names written by WriteFiles and GenerateBundle.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// CA is a certificate authority that issues gateway certificates.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey

	// CertValidity is how long issued certificates are valid, capped by the
	// CA's own expiry. Zero means DefaultCertValidity.
	CertValidity time.Duration

	certDER []byte
}

// Cert is an issued certificate and its private key.
type Cert struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey

	certDER []byte
}

// NewCA creates a self-signed CA valid for validFor (zero: DefaultCAValidity).
func NewCA(commonName string, validFor time.Duration) (*CA, error) {
	if commonName == "" {
		return nil, errors.New("new CA: empty common name")
	}
	if validFor <= 0 {
		validFor = DefaultCAValidity
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("new CA %q: generate key: %w", commonName, err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("new CA %q: %w", commonName, err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"Meridian"}},
		NotBefore:             now.Add(-5 * time.Minute), // tolerate clock skew between gateways
		NotAfter:              now.Add(validFor),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("new CA %q: sign: %w", commonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("new CA %q: %w", commonName, err)
	}
	return &CA{Cert: cert, Key: key, certDER: der}, nil
}

func newSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil
}

// Issue signs a certificate for gateway name. Its Common Name is name; its
// SANs are name itself (when it is a valid DNS name) and hosts, each an IP
// address or a DNS name. It is valid for server and client authentication.
func (ca *CA) Issue(name string, hosts []string) (*Cert, error) {
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("issue certificate: %w", err)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: name, Organization: []string{"Meridian"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{GatewayURI(name)},
	}
	if isDNSName(name) {
		tmpl.DNSNames = append(tmpl.DNSNames, name)
	}
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		switch ip := net.ParseIP(h); {
		case h == "":
		case ip != nil:
			if !slices.ContainsFunc(tmpl.IPAddresses, ip.Equal) {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			}
		case isDNSName(h):
			if !slices.Contains(tmpl.DNSNames, h) {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		default:
			return nil, fmt.Errorf("issue certificate for %s: host %q is neither an IP address nor a DNS name", name, h)
		}
	}
	c, err := ca.sign(tmpl)
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: %w", name, err)
	}
	return c, nil
}

// sign completes tmpl (a new P-256 key, serial number, validity capped by
// the CA's own, digital-signature key usage) and signs it.
func (ca *CA) sign(tmpl *x509.Certificate) (*Cert, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	if tmpl.SerialNumber, err = newSerial(); err != nil {
		return nil, err
	}
	validity := ca.CertValidity
	if validity <= 0 {
		validity = DefaultCertValidity
	}
	now := time.Now()
	tmpl.NotBefore, tmpl.NotAfter = now.Add(-5*time.Minute), now.Add(validity)
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Cert{Cert: cert, Key: key, certDER: der}, nil
}

// checkName accepts gateway names that are safe as file names and as a
// certificate Common Name.
func checkName(name string) error {
	if name == "" {
		return errors.New("empty gateway name")
	}
	if len(name) > 64 {
		return fmt.Errorf("gateway name %q is longer than 64 characters", name)
	}
	for _, c := range name {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
		if !ok {
			return fmt.Errorf("gateway name %q: character %q not allowed (use letters, digits, '-', '_', '.')", name, c)
		}
	}
	if name == "." || name == ".." || name == "ca" {
		return fmt.Errorf("gateway name %q is reserved", name)
	}
	return nil
}

func isDNSName(s string) bool {
	if s == "" || len(s) > 253 || strings.HasPrefix(s, ".") || strings.HasSuffix(s, ".") {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// CertPEM returns the CA certificate as PEM.
func (ca *CA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.certDER})
}

// KeyPEM returns the CA private key as PEM (PKCS #8).
func (ca *CA) KeyPEM() ([]byte, error) { return keyPEM(ca.Key) }

// Pool returns a pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// CertPEM returns the certificate as PEM.
func (c *Cert) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.certDER})
}

// KeyPEM returns the private key as PEM (PKCS #8).
func (c *Cert) KeyPEM() ([]byte, error) { return keyPEM(c.Key) }

// TLSCertificate returns the certificate for tls.Config.Certificates.
func (c *Cert) TLSCertificate() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{c.certDER}, PrivateKey: c.Key, Leaf: c.Cert}
}

func keyPEM(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// WriteFiles writes ca.crt (0644) and ca.key (0600) into dir, creating dir
// (0700) if needed.
func (ca *CA) WriteFiles(dir string) error {
	kp, err := ca.KeyPEM()
	if err != nil {
		return fmt.Errorf("write CA files: %w", err)
	}
	return writePair(dir, CACertFile, ca.CertPEM(), CAKeyFile, kp)
}

// WriteFiles writes <name>.crt (0644) and <name>.key (0600) into dir, where
// name is the certificate's Common Name, creating dir (0700) if needed.
func (c *Cert) WriteFiles(dir string) error {
	name := c.Cert.Subject.CommonName
	if err := checkName(name); err != nil {
		return fmt.Errorf("write certificate files: %w", err)
	}
	kp, err := c.KeyPEM()
	if err != nil {
		return fmt.Errorf("write certificate files for %s: %w", name, err)
	}
	return writePair(dir, name+".crt", c.CertPEM(), name+".key", kp)
}

func writePair(dir, certName string, certPEM []byte, keyName string, keyPEM []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if err := writeFileAtomic(filepath.Join(dir, keyName), keyPEM, 0o600); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, certName), certPEM, 0o644)
}

// writeFileAtomic writes through a temporary file and a rename, so that a
// gateway reading the file never sees half of it.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	_, werr := f.Write(data)
	cerr := f.Close()
	err = errors.Join(werr, cerr, os.Chmod(tmp, perm))
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// LoadCA reads a CA certificate and key (for issuing more certificates).
func LoadCA(certFile, keyFile string) (*CA, error) {
	certDER, err := readCertFile(certFile)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(certDER[0])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certFile, err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("%s: certificate %q is not a CA", certFile, cert.Subject.CommonName)
	}
	key, err := readKeyFile(keyFile)
	if err != nil {
		return nil, err
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("%s: key does not match certificate %s", keyFile, certFile)
	}
	return &CA{Cert: cert, Key: key, certDER: certDER[0]}, nil
}

// maxPEMBytes caps a certificate, CA or key file: a bundle of a few
// certificates is a few KiB, and a path that names something endless
// (a device, a pipe) must not be read forever.
const maxPEMBytes = 1 << 20

// readPEMFile reads path, at most maxPEMBytes of it.
func readPEMFile(path, what string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxPEMBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	if len(data) > maxPEMBytes {
		return nil, fmt.Errorf("%s: %s file is larger than %d bytes", path, what, maxPEMBytes)
	}
	return data, nil
}

func readCertFile(path string) ([][]byte, error) {
	data, err := readPEMFile(path, "certificate")
	if err != nil {
		return nil, err
	}
	return parseCertPEM(path, data)
}

// parseCertPEM returns the DER of the CERTIFICATE blocks of data, read
// from path.
func parseCertPEM(path string, data []byte) ([][]byte, error) {
	var ders [][]byte
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			ders = append(ders, b.Bytes)
		}
	}
	if len(ders) == 0 {
		return nil, fmt.Errorf("%s: no PEM CERTIFICATE block", path)
	}
	return ders, nil
}

func readKeyFile(path string) (*ecdsa.PrivateKey, error) {
	data, err := readPEMFile(path, "private key")
	if err != nil {
		return nil, err
	}
	return parseKeyPEM(path, data)
}

// parseKeyPEM parses the ECDSA private key in the first PEM block of data,
// read from path.
func parseKeyPEM(path string, data []byte) (*ecdsa.PrivateKey, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, fmt.Errorf("%s: no PEM block", path)
	}
	var (
		k   any
		err error
	)
	switch b.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(b.Bytes)
	default:
		return nil, fmt.Errorf("%s: unexpected PEM block %q", path, b.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: key is %T, want ECDSA", path, k)
	}
	return ek, nil
}

// LoadPool reads a PEM file of CA certificates.
func LoadPool(caFile string) (*x509.CertPool, error) {
	ders, err := readCertFile(caFile)
	if err != nil {
		return nil, err
	}
	p := x509.NewCertPool()
	for _, d := range ders {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", caFile, err)
		}
		p.AddCert(c)
	}
	return p, nil
}

// ServerTLS builds the listening side's TLS config from PEM files: TLS 1.3,
// the gateway's certificate, and client certificates required and verified
// against the CA.
func ServerTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	pool, cert, err := loadTLS(caFile, certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("server TLS: %w", err)
	}
	return serverConfig(pool, cert), nil
}

// ClientTLS builds the dialing side's TLS config from PEM files: TLS 1.3,
// the gateway's certificate as client certificate, and the peer verified
// against the CA under serverName (the peer gateway's name or an address in
// its certificate; empty: the host of the address dialled).
func ClientTLS(caFile, certFile, keyFile, serverName string) (*tls.Config, error) {
	pool, cert, err := loadTLS(caFile, certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("client TLS: %w", err)
	}
	return clientConfig(pool, cert, serverName), nil
}

func loadTLS(caFile, certFile, keyFile string) (*x509.CertPool, tls.Certificate, error) {
	pool, err := LoadPool(caFile)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, tls.Certificate{}, fmt.Errorf("load %s, %s: %w", certFile, keyFile, err)
	}
	return pool, cert, nil
}

func serverConfig(pool *x509.CertPool, cert tls.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}
}

func clientConfig(pool *x509.CertPool, cert tls.Certificate, serverName string) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ServerName:   serverName,
	}
}

// ServerConfig is ServerTLS for an in-memory CA and certificate.
func (ca *CA) ServerConfig(c *Cert) *tls.Config {
	return serverConfig(ca.Pool(), c.TLSCertificate())
}

// ClientConfig is ClientTLS for an in-memory CA and certificate.
func (ca *CA) ClientConfig(c *Cert, serverName string) *tls.Config {
	return clientConfig(ca.Pool(), c.TLSCertificate(), serverName)
}

// PeerName returns the gateway name in the peer's verified certificate (its
// Common Name), or "" if the peer presented none.
func PeerName(cs tls.ConnectionState) string {
	if len(cs.PeerCertificates) == 0 {
		return ""
	}
	return cs.PeerCertificates[0].Subject.CommonName
}

// GatewaySpec names a gateway to issue a certificate for.
type GatewaySpec struct {
	Name  string   // gateway name: the certificate's Common Name and file name
	Hosts []string // DNS names and IP addresses peers dial it by
	// Loopback adds "localhost", 127.0.0.1 and ::1 to Hosts (labs, demos).
	Loopback bool
}

// GenerateBundle writes a CA and a certificate per gateway into dir: ca.crt,
// ca.key, <name>.crt and <name>.key. If dir already holds ca.crt and ca.key,
// that CA is reused, so gateways can be added later; gateway files are
// (re)written. The CA's Common Name is "Meridian CA".
func GenerateBundle(dir string, gateways []GatewaySpec) error {
	seen := map[string]bool{}
	for _, g := range gateways {
		if err := checkName(g.Name); err != nil {
			return fmt.Errorf("generate bundle: %w", err)
		}
		if seen[g.Name] {
			return fmt.Errorf("generate bundle: gateway %q listed twice", g.Name)
		}
		seen[g.Name] = true
	}
	caCert, caKey := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	var ca *CA
	_, errCert := os.Stat(caCert)
	_, errKey := os.Stat(caKey)
	switch {
	case errCert == nil && errKey == nil:
		var err error
		if ca, err = LoadCA(caCert, caKey); err != nil {
			return fmt.Errorf("generate bundle: reuse existing CA: %w", err)
		}
	case errors.Is(errCert, os.ErrNotExist) && errors.Is(errKey, os.ErrNotExist):
		var err error
		if ca, err = NewCA("Meridian CA", DefaultCAValidity); err != nil {
			return fmt.Errorf("generate bundle: %w", err)
		}
		if err := ca.WriteFiles(dir); err != nil {
			return fmt.Errorf("generate bundle: %w", err)
		}
	default:
		return fmt.Errorf("generate bundle: %s needs both %s and %s, or neither", dir, CACertFile, CAKeyFile)
	}
	for _, g := range gateways {
		hosts := g.Hosts
		if g.Loopback {
			hosts = append(slices.Clone(hosts), "localhost", "127.0.0.1", "::1")
		}
		c, err := ca.Issue(g.Name, hosts)
		if err != nil {
			return fmt.Errorf("generate bundle: %w", err)
		}
		if err := c.WriteFiles(dir); err != nil {
			return fmt.Errorf("generate bundle: %w", err)
		}
	}
	return nil
}
