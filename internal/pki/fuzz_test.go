package pki

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/internal/alloctest"
)

// FuzzParsePEM feeds arbitrary bytes to the certificate and key loaders'
// parsers, as read from a certificate, CA or key file: no panic, and
// allocation bounded by the input (at most maxPEMBytes of a file is read).
// Seeds are a real CA certificate, a gateway certificate and key, and
// their concatenation.
func FuzzParsePEM(f *testing.F) {
	ca, err := NewCA("fuzz CA", time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	c, err := ca.Issue("gw-a", []string{"localhost"})
	if err != nil {
		f.Fatal(err)
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Cert.Raw})
	der, err := x509.MarshalPKCS8PrivateKey(c.Key)
	if err != nil {
		f.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	f.Add(caPEM)
	f.Add(certPEM)
	f.Add(keyPEM)
	f.Add(append(append(append([]byte(nil), certPEM...), caPEM...), keyPEM...))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		alloctest.Check(t, "parse PEM", uint64(64*len(data)+256<<10), func() {
			if ders, err := parseCertPEM("fuzz.pem", data); err == nil {
				for _, d := range ders {
					x509.ParseCertificate(d)
				}
			}
			parseKeyPEM("fuzz.pem", data)
		})
	})
}

// TestLoadRefusesHugeFiles checks that a certificate or key file is read
// only up to maxPEMBytes: a larger one is refused, naming the file.
func TestLoadRefusesHugeFiles(t *testing.T) {
	path := t.TempDir() + "/huge.pem"
	if err := os.WriteFile(path, make([]byte, maxPEMBytes+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadPool(path); err == nil || !strings.Contains(err.Error(), path+": certificate file is larger than") {
		t.Errorf("LoadPool: got %v, want a size error naming the file", err)
	}
	if _, err := readKeyFile(path); err == nil || !strings.Contains(err.Error(), path+": private key file is larger than") {
		t.Errorf("readKeyFile: got %v, want a size error naming the file", err)
	}
}
