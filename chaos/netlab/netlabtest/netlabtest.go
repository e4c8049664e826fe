//go:build linux

package netlabtest

import (
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/meridian-gw/meridian/chaos/netlab"
)

// Require skips the test when the lab cannot run here (not root, no TUN
// device, no network namespaces), giving the reason. With CI=true in the
// environment it fails the test instead: CI runs as root and must run
// the lab tests.
func Require(t testing.TB) {
	t.Helper()
	err := netlab.Check()
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true but the network lab cannot run: %v", err)
	}
	t.Skipf("skipping: %v (run as root to run it; CI=true makes this a failure)", err)
}

// New builds a lab for the test, after Require, and closes it when the
// test ends, failing the test if Close fails. opts.Logger defaults to the
// test's log.
func New(t testing.TB, opts netlab.Options) *netlab.Lab {
	t.Helper()
	Require(t)
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(logWriter{t}, nil))
	}
	lab, err := netlab.New(opts)
	if err != nil {
		t.Fatalf("netlab.New: %v", err)
	}
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("lab.Close: %v", err)
		}
	})
	return lab
}

// logWriter sends log lines to the test's log.
type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
