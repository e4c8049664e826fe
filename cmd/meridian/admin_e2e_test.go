package main

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/internal/pki"
	"github.com/meridian-gw/meridian/mirror"
	"github.com/meridian-gw/meridian/mirror/dr"
)

// TestAdminAuthAndSecrets runs two gateways whose topology takes an admin
// token and the receiver's link address from the environment, with the
// receiver's admin API behind token and mTLS. It checks who may read and
// act through the CLI, then greps every output of the run (each command's
// stdout and stderr, both gateways' logs, /status, /metrics, validate
// errors) for the two values: neither may appear.
func TestAdminAuthAndSecrets(t *testing.T) {
	src, dst := twoClusters(t)
	srcOpts := []kgo.Opt{kgo.SeedBrokers(src.ListenAddrs()...)}
	dstOpts := []kgo.Opt{kgo.SeedBrokers(dst.ListenAddrs()...)}

	rnd := make([]byte, 12)
	_, _ = rand.Read(rnd)
	token := "tok-" + hex.EncodeToString(rnd) // the admin token: a secret
	westListen := freeUDPAddr(t)              // from ${ENV} too, so secret by rule, and printed in logs and /status
	t.Setenv("MERIDIAN_TEST_ADMIN_TOKEN", token)
	t.Setenv("MERIDIAN_TEST_WEST_LISTEN", westListen)
	t.Setenv(adminTokenEnv, "") // commands below send a token only when told

	dir := t.TempDir()
	westAdmin := freeTCPAddr(t)
	p := topoParams{
		SrcBootstrap: strings.Join(src.ListenAddrs(), ", "),
		DstBootstrap: strings.Join(dst.ListenAddrs(), ", "),
		EastListen:   freeUDPAddr(t), WestListen: `"${MERIDIAN_TEST_WEST_LISTEN}"`,
		EastAdmin: freeTCPAddr(t),
		WestAdmin: fmt.Sprintf(`{listen: "%s", token: "${MERIDIAN_TEST_ADMIN_TOKEN}", mtls: true}`, westAdmin),
	}
	topo := writeTopology(t, dir, p)

	var outputs []string // every output of the run, grepped at the end
	run := func(env []string, args ...string) result {
		t.Helper()
		r := meridian(t, dir, env, args...)
		outputs = append(outputs, fmt.Sprintf("meridian %s:\n%s", strings.Join(args, " "), r))
		return r
	}
	if r := run(nil, "certs", "--out", "certs", "-f", topo); r.code != 0 {
		t.Fatalf("meridian certs: %v", r)
	}
	if r := run(nil, "certs", "--out", "certs", "--operator", "alice"); r.code != 0 || !strings.Contains(r.stdout, "operator-alice.crt") {
		t.Fatalf("meridian certs --operator: %v", r)
	}
	if r := run(nil, "validate", "-f", topo); r.code != 0 {
		t.Fatalf("meridian validate: %v", r)
	}
	// A validate error that quotes a value from the environment.
	bad, err := os.ReadFile(topo)
	if err != nil {
		t.Fatal(err)
	}
	badTopo := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(badTopo, []byte(strings.Replace(string(bad), "    to: [west/kafka]\n", "    to: [west/kafka]\n    start_at: \"${MERIDIAN_TEST_ADMIN_TOKEN}\"\n", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := run(nil, "validate", "-f", badTopo); r.code != 1 || !strings.Contains(r.stdout+r.stderr, "start_at") || !strings.Contains(r.stdout+r.stderr, "[redacted]") {
		t.Errorf("validate of a bad start_at: %v\nwant exit status 1 naming start_at with the value [redacted]", r)
	}

	west := startChild(t, "west-gw", dir, "run", "-f", topo, "--gateway", "west-gw", "--log-level", "debug")
	east := startChild(t, "east-gw", dir, "run", "-f", topo, "--gateway", "east-gw", "--log-level", "debug")
	cl := mustClient(t, append(slices.Clone(srcOpts), kgo.ProducerLinger(2*time.Millisecond)))
	gen := &recordGen{base: time.UnixMilli(1_700_000_000_000)}
	if err := gen.produce(t.Context(), cl, 200, 100, 0); err != nil {
		t.Fatal(err)
	}
	waitMirrored(t, srcOpts, dstOpts, gen.mirrored.Load(), 60*time.Second)

	https := "https://" + westAdmin
	ca := filepath.Join(dir, "certs", pki.CACertFile)
	opCert, opKey := pki.OperatorFiles(filepath.Join(dir, "certs"), "alice")
	siteCert, siteKey := filepath.Join(dir, "certs", "east-gw.crt"), filepath.Join(dir, "certs", "east-gw.key")
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	// Reads: /status needs the token or a certificate.
	statusTests := []struct {
		name string
		env  []string
		args []string
		code int
	}{
		{"no credentials", nil, []string{"--ca", ca}, 1},
		{"wrong token", []string{adminTokenEnv + "=tok-wrong-wrong-wrong-wrong"}, []string{"--ca", ca}, 1},
		{"token from the environment", []string{adminTokenEnv + "=" + token}, []string{"--ca", ca}, 0},
		{"token file", nil, []string{"--ca", ca, "--token-file", tokenFile}, 0},
		{"operator certificate", nil, []string{"--ca", ca, "--cert", opCert, "--key", opKey}, 0},
		{"site certificate may read", nil, []string{"--ca", ca, "--cert", siteCert, "--key", siteKey}, 0},
	}
	for _, tt := range statusTests {
		r := run(tt.env, append([]string{"status", "--admin", https, "--output", "json"}, tt.args...)...)
		if r.code != tt.code {
			t.Errorf("status, %s: %v\nwant exit status %d", tt.name, r, tt.code)
			continue
		}
		if tt.code != 0 {
			if !strings.Contains(r.stderr, "401") {
				t.Errorf("status, %s: stderr %q, want it to say HTTP 401", tt.name, r.stderr)
			}
			continue
		}
		var st mirror.Status
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.Gateway != "west-gw" {
			t.Errorf("status, %s: %v (%v), want west-gw's status", tt.name, r, err)
		}
	}

	// Actions: the site certificate may not fail over, the operator may.
	r := run(nil, "failover", "--admin", https, "--ca", ca, "--cert", siteCert, "--key", siteKey, "--route", "orders", "--dry-run")
	if r.code != 1 || !strings.Contains(r.stderr, "403") {
		t.Errorf("failover with a site certificate: %v\nwant exit status 1, HTTP 403", r)
	}
	r = run(nil, "failback", "--admin", https, "--ca", ca, "--cert", siteCert, "--key", siteKey, "--route", "orders", "--dry-run")
	if r.code != 1 || !strings.Contains(r.stderr, "403") {
		t.Errorf("failback with a site certificate: %v\nwant exit status 1, HTTP 403", r)
	}
	r = run(nil, "failover", "--admin", https, "--ca", ca, "--route", "orders", "--dry-run")
	if r.code != 1 || !strings.Contains(r.stderr, "401") {
		t.Errorf("failover without credentials: %v\nwant exit status 1, HTTP 401", r)
	}
	r = run(nil, "failover", "--admin", https, "--ca", ca, "--cert", opCert, "--key", opKey, "--route", "orders", "--dry-run", "--output", "json")
	var reps []dr.FailoverReport
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &reps) != nil || len(reps) != 1 || !reps[0].DryRun || reps[0].Fenced {
		t.Errorf("failover --dry-run with the operator certificate: %v\nwant exit status 0 and one dry-run report", r)
	}

	// Reload is an action like failover: refused to the site certificate
	// and without credentials; the token may (the file is unchanged).
	r = run(nil, "reload", "--admin", https, "--ca", ca, "--cert", siteCert, "--key", siteKey)
	if r.code != 1 || !strings.Contains(r.stderr, "403") {
		t.Errorf("reload with a site certificate: %v\nwant exit status 1, HTTP 403", r)
	}
	r = run(nil, "reload", "--admin", https, "--ca", ca)
	if r.code != 1 || !strings.Contains(r.stderr, "401") {
		t.Errorf("reload without credentials: %v\nwant exit status 1, HTTP 401", r)
	}
	r = run(nil, "reload", "--admin", https, "--ca", ca, "--token-file", tokenFile)
	if r.code != 0 || !strings.Contains(r.stdout, "unchanged") {
		t.Errorf("reload with the token: %v\nwant exit status 0, unchanged", r)
	}

	// Straight HTTP: /healthz and /metrics are open, /status and a GET on
	// the action are not, and the bodies hold no secret.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: mustPool(t, ca)}}}
	get := func(path, tok string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, https+path, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		outputs = append(outputs, fmt.Sprintf("GET %s: HTTP %d\n%s", path, resp.StatusCode, b))
		return resp.StatusCode, string(b)
	}
	for _, tt := range []struct {
		path, tok string
		code      int
	}{
		{"/healthz", "", 200}, {"/metrics", "", 200}, {"/status", "", 401}, {"/status", token, 200}, {"/v1/failover", token, 405},
	} {
		if code, body := get(tt.path, tt.tok); code != tt.code {
			t.Errorf("GET %s (token %v): HTTP %d %s, want %d", tt.path, tt.tok != "", code, body, tt.code)
		}
	}
	if _, body := get("/metrics", ""); !strings.Contains(body, `meridian_admin_refused_total{reason="unauthorized"}`) ||
		!strings.Contains(body, `meridian_admin_refused_total{reason="certificate"}`) || !strings.Contains(body, `meridian_admin_refused_total{reason="method"}`) {
		t.Errorf("/metrics does not count the refusals by reason")
	}
	// East's status names its peer by west's address, a value from ${ENV}.
	r = run(nil, "status", "--admin", p.EastAdmin, "--output", "json")
	var est mirror.Status
	if err := json.Unmarshal([]byte(r.stdout), &est); r.code != 0 || err != nil || len(est.Peers) != 1 || est.Peers[0].Address != "[redacted]" {
		t.Errorf("east status: %v\nwant its one peer's address shown as [redacted]", r)
	}
	if _, body, err := httpGet(p.EastAdmin, "/status"); err == nil {
		outputs = append(outputs, "east /status:\n"+body)
	}

	west.signal(t, syscall.SIGTERM)
	east.signal(t, syscall.SIGTERM)
	for _, c := range []*child{west, east} {
		if code := c.wait(t, 15*time.Second); code != 0 {
			t.Errorf("%s after SIGTERM: exit status %d, want 0", c.name, code)
		}
		o, e := c.output()
		outputs = append(outputs, c.name+" stdout:\n"+o, c.name+" stderr:\n"+e)
	}
	if _, e := west.output(); !strings.Contains(e, "admin request refused") || !strings.Contains(e, "[redacted]") {
		t.Errorf("west-gw's log shows no refusal or no [redacted] link address:\n%s", e)
	}
	for _, out := range outputs {
		for name, secret := range map[string]string{"admin token": token, "west listen address": westListen} {
			if strings.Contains(out, secret) {
				t.Errorf("the %s %q appears in output:\n%s", name, secret, out)
			}
		}
	}
}

func mustPool(t *testing.T, caFile string) *x509.CertPool {
	t.Helper()
	pool, err := pki.LoadPool(caFile)
	if err != nil {
		t.Fatal(err)
	}
	return pool
}
