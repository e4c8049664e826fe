package gateway_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/config"
	"github.com/meridian-gw/meridian/internal/gateway"
	"github.com/meridian-gw/meridian/internal/pki"
	"github.com/meridian-gw/meridian/topology"
)

// TestReloadNonLive reloads a gateway that is built but not run with
// files that each change one setting, and checks which are refused (at
// which path) and which apply. Nothing is dialled or bound.
func TestReloadNonLive(t *testing.T) {
	const base = `version: 1
regions:
  - name: hq
    clusters: [{name: kafka, kind: kafka, bootstrap: ["127.0.0.1:1"]}]
    gateways: [{name: hq-a, listen: "127.0.0.1:2", tls: {ca_file: ca.crt, cert_file: hq-a.crt, key_file: hq-a.key}}]
  - name: dc
    clusters:
      - {name: kafka, kind: kafka, bootstrap: ["127.0.0.1:3"]}
      - {name: spare, kind: kafka, bootstrap: ["127.0.0.1:4"]}
    gateways: [{name: dc-a, listen: "127.0.0.1:5", tls: {ca_file: ca.crt, cert_file: dc-a.crt, key_file: dc-a.key}}]
links:
  - {between: [hq, dc], dial: hq, profile: lan}
routes:
  - {name: a, from: hq/kafka, to: [dc/kafka], topics: {include: ['^a\.']}}
`
	tests := []struct {
		name, old, new string
		outcome, want  string // want: in the first problem, or the legs added/changed
	}{
		{"listen", `listen: "127.0.0.1:5"`, `listen: "127.0.0.1:6"`, gateway.ReloadRefused, "regions[1].gateways[0].listen: cannot change"},
		{"admin", `listen: "127.0.0.1:5",`, `listen: "127.0.0.1:5", admin: "127.0.0.1:7",`, gateway.ReloadRefused, "regions[1].gateways[0].admin: cannot change"},
		{"tls files", `cert_file: dc-a.crt`, `cert_file: dc-a2.crt`, gateway.ReloadRefused, "regions[1].gateways[0].tls: cannot change"},
		{"bootstrap in use", `"127.0.0.1:3"`, `"127.0.0.1:8"`, gateway.ReloadRefused, "regions[1].clusters[0].bootstrap: cannot change"},
		{"bootstrap not in use", `"127.0.0.1:4"`, `"127.0.0.1:9"`, gateway.ReloadUnchanged, ""},
		{"another gateway's listen", `listen: "127.0.0.1:2"`, `listen: "127.0.0.1:10"`, gateway.ReloadUnchanged, ""}, // dc-a sends nothing: hq-a is no peer of it
		{"route added", "routes:\n", "routes:\n  - {name: b, from: hq/kafka, to: [dc/spare], topics: {include: ['^b\\.']}}\n", gateway.ReloadApplied, "added in b:dc/spare"},
		{"region renamed", "  - name: dc\n", "  - name: dc2\n", gateway.ReloadInvalid, "dc"},
	}
	ca, err := pki.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ca.Issue("dc-a", []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "topology.yaml")
			write := func(s string) {
				if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			write(base)
			f, err := config.Load(file)
			if err != nil {
				t.Fatal(err)
			}
			topo, err := topology.New(f)
			if err != nil {
				t.Fatal(err)
			}
			g, err := gateway.New(gateway.Options{Topology: topo, Name: "dc-a", ServerTLS: ca.ServerConfig(c), ClientTLS: ca.ClientConfig(c, ""),
				AdminAddr: "-", Logger: testLogger(t), Reload: gateway.ReloadFrom(file, nil)})
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(base, tt.old) {
				t.Fatalf("base has no %q", tt.old)
			}
			write(strings.Replace(base, tt.old, tt.new, 1))
			res := g.Reload(context.Background())
			if res.Outcome != tt.outcome {
				t.Fatalf("outcome %v, want %s", res, tt.outcome)
			}
			got := strings.Join(res.Problems, "\n")
			if tt.outcome == gateway.ReloadApplied {
				got = "added " + strings.Join(res.Added, ",") + " changed " + strings.Join(res.Changed, ",")
			}
			if !strings.Contains(got, tt.want) {
				t.Errorf("got %q, want it to contain %q", got, tt.want)
			}
			if tt.outcome == gateway.ReloadRefused && !strings.Contains(got, "topology.yaml:") {
				t.Errorf("problems %q have no file position", got)
			}
		})
	}
}
