package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/meridian-gw/meridian/internal/redact"
)

// TestPanicRedacted: a panic in a command prints through the redacting
// stderr, so a secret in the panic value is not printed, and exits 2.
func TestPanicRedacted(t *testing.T) {
	const secret = "pw-0123456789abcdef"
	var stderr bytes.Buffer
	secrets := redact.New(secret)
	g := &globals{stdout: secrets.Writer(new(bytes.Buffer)), stderr: secrets.Writer(&stderr), secrets: secrets}
	root := &cobra.Command{Use: "x", RunE: func(*cobra.Command, []string) error {
		panic("cannot use password " + secret)
	}}
	root.SetArgs(nil)
	err := execute(context.Background(), root, g)
	ee, ok := err.(*exitError)
	if !ok || ee.code != 2 {
		t.Errorf("execute = %v, want exit status 2", err)
	}
	out := stderr.String()
	if strings.Contains(out, secret) || !strings.Contains(out, "panic: cannot use password [redacted]") || !strings.Contains(out, "goroutine") {
		t.Errorf("stderr:\n%s\nwant the panic with the secret [redacted] and a stack", out)
	}
}
