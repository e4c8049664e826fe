package main

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/config"
	"github.com/meridian-gw/meridian/internal/pki"
)

// copyTopology copies a topology file into a new temporary directory and
// returns the directory.
func copyTopology(t *testing.T, src string) string {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, filepath.Base(src)), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// writeCertsFor issues, with one fresh CA, the link certificates the
// topology file at path names (made afresh so that none expires in the
// tree), at the paths it names: the CA at each ca_file, each gateway's
// certificate and key at its cert_file and key_file. Test files name the
// problems they want:
//   - a file whose name starts with "missing-" is not written;
//   - a key file whose name starts with "other-" holds an unrelated key;
//   - a ca_file whose name starts with "stranger-" holds another CA;
//   - a file named by several gateways holds what the first one needs.
//
// A file that does not load gets no certificates.
func writeCertsFor(t *testing.T, path string, env map[string]string) {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	f, err := config.Load(path)
	if err != nil {
		return
	}
	ca, err := pki.NewCA("Meridian CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := pki.NewCA("Stranger CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	written := map[string]bool{}
	write := func(file string, data []byte) {
		if strings.HasPrefix(filepath.Base(file), "missing-") || written[file] {
			return // the first gateway naming a file decides its contents
		}
		written[file] = true
		if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range f.Regions {
		for _, g := range r.Gateways {
			if g.TLS == nil {
				continue
			}
			c, err := ca.Issue(g.Name, []string{"127.0.0.1", "localhost"})
			if err != nil {
				t.Fatal(err)
			}
			keyOf := c
			if strings.HasPrefix(filepath.Base(g.TLS.KeyFile), "other-") {
				if keyOf, err = ca.Issue(g.Name, nil); err != nil {
					t.Fatal(err)
				}
			}
			keyPEM, err := keyOf.KeyPEM()
			if err != nil {
				t.Fatal(err)
			}
			caPEM := ca.CertPEM()
			if strings.HasPrefix(filepath.Base(g.TLS.CAFile), "stranger-") {
				caPEM = stranger.CertPEM()
			}
			write(g.TLS.CAFile, caPEM)
			write(g.TLS.CertFile, c.CertPEM())
			write(g.TLS.KeyFile, keyPEM)
		}
	}
}

// A gateway whose own certificate the fleet's tls policy revokes (by
// serial, or in the CRL) is reported by validate at its tls.cert_file.
func TestValidateReportsRevokedOwnCertificate(t *testing.T) {
	dir := t.TempDir()
	topo := writeTopology(t, dir, topoParams{
		SrcBootstrap: "127.0.0.1:1", DstBootstrap: "127.0.0.1:2",
		EastListen: "127.0.0.1:7443", WestListen: "127.0.0.1:7444",
	})
	out := filepath.Join(dir, "certs")
	if r := meridian(t, dir, nil, "certs", "--out", out, "-f", topo); r.code != 0 {
		t.Fatalf("meridian certs: %v", r)
	}
	if r := meridian(t, dir, nil, "validate", "-f", topo); r.code != 0 {
		t.Fatalf("validate before any revocation: %v", r)
	}
	serial := func(gw string) *big.Int {
		data, err := os.ReadFile(filepath.Join(out, gw+".crt"))
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(data)
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return c.SerialNumber
	}
	ca, err := pki.LoadCA(filepath.Join(out, pki.CACertFile), filepath.Join(out, pki.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.RevokeFile(filepath.Join(out, "fleet.crl"), serial("west-gw")); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(topo)
	if err != nil {
		t.Fatal(err)
	}
	data = append(data, fmt.Sprintf("tls:\n  revoked_serials: [%q]\n  crl: certs/fleet.crl\n", pki.SerialString(serial("east-gw")))...)
	if err := os.WriteFile(topo, data, 0o600); err != nil {
		t.Fatal(err)
	}
	r := meridian(t, dir, nil, "validate", "-f", topo)
	if r.code != 1 {
		t.Fatalf("validate with both gateways' certificates revoked: %v\nwant exit status 1", r)
	}
	for _, want := range []string{
		"regions[0].gateways[0].tls.cert_file: this gateway's own certificate is refused by the fleet's tls policy: certificate \"east-gw\"",
		"is revoked (tls.revoked_serials)",
		"regions[1].gateways[0].tls.cert_file: this gateway's own certificate is refused by the fleet's tls policy: certificate \"west-gw\"",
		"is revoked (tls.crl)",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("validate output lacks %q:\n%s", want, r.stdout)
		}
	}
}
