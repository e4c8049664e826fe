package main

import (
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
