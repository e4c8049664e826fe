package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSystemdUnitVerifies runs systemd-analyze verify on
// examples/meridian@.service (as an instance, with ExecStart pointed at an
// executable that exists here) and fails on any complaint: verify exits 0
// on some, such as an unknown Restart= value, and only prints them.
func TestSystemdUnitVerifies(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("systemd-analyze is not installed (CI=true: .ci/run installs systemd)")
		}
		t.Skip("systemd-analyze is not installed")
	}
	unit, err := os.ReadFile("../../examples/meridian@.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Restart=on-failure", "User=meridian", "CapabilityBoundingSet=\n", "NoNewPrivileges=yes",
		"ExecStart=/usr/local/bin/meridian run -f /etc/meridian/topology.yaml --gateway %i"} {
		if !bytes.Contains(unit, []byte(want)) {
			t.Errorf("the unit lacks %q", want)
		}
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	unit = bytes.ReplaceAll(unit, []byte("/usr/local/bin/meridian"), []byte(self))
	if err := os.WriteFile(filepath.Join(dir, "meridian@.service"), unit, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sa, "verify", "./meridian@hq-a.service")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
