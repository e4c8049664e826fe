package main

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/meridian-gw/meridian/config"
	"github.com/meridian-gw/meridian/transport"
)

func TestVersion(t *testing.T) {
	r := meridian(t, "", nil, "version")
	first := fmt.Sprintf("meridian dev (wire protocol %d-%d)\n", transport.VersionMin, transport.VersionMax)
	if r.code != 0 || !strings.HasPrefix(r.stdout, first) || !strings.Contains(r.stdout, "\ngo:       "+runtime.Version()) || r.stderr != "" {
		t.Errorf("meridian version:\n%v\nwant exit status 0 and stdout starting %q with the Go version", r, first)
	}
	r = meridian(t, "", nil, "version", "-o", "json")
	var b struct {
		Version     string `json:"version"`
		Go          string `json:"go"`
		ProtocolMin int    `json:"protocol_min"`
		ProtocolMax int    `json:"protocol_max"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &b); err != nil || r.code != 0 {
		t.Fatalf("meridian version -o json: %v\n%v", err, r)
	}
	if b.Version != "dev" || b.Go != runtime.Version() || b.ProtocolMin != int(transport.VersionMin) || b.ProtocolMax != int(transport.VersionMax) {
		t.Errorf("meridian version -o json = %+v", b)
	}
}

// TestVersionFromMakeBuild builds the binary with make build and
// checks that it reports git describe's version and the checkout's commit.
func TestVersionFromMakeBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	git := func(args ...string) string {
		out, err := exec.Command("git", args...).Output()
		if err != nil {
			t.Skipf("git %v: %v (not a git checkout?)", args, err)
		}
		return strings.TrimSpace(string(out))
	}
	desc, head := git("describe", "--tags", "--always", "--dirty"), git("rev-parse", "HEAD")
	bin := filepath.Join(t.TempDir(), "meridian")
	build := exec.Command("make", "-C", "../..", "build", "BIN="+bin)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version", "-o", "json").Output()
	if err != nil {
		t.Fatal(err)
	}
	var b struct{ Version, Commit string }
	if err := json.Unmarshal(out, &b); err != nil {
		t.Fatal(err)
	}
	if b.Version != desc || b.Commit != head {
		t.Errorf("built with version %q at commit %s; the binary says %q, %q", desc, head, b.Version, b.Commit)
	}
}

// fleetEnv is what examples/satellite-fleet.yaml reads from the environment.
var fleetEnv = []string{"MERIDIAN_HQ_KAFKA_PASSWORD=hq-secret", "MERIDIAN_DR_KAFKA_PASSWORD=dr-secret", "MERIDIAN_RELAY_PASSWORD=relay-secret"}

func TestValidateExamples(t *testing.T) {
	tests := []struct {
		file string
		want string // summary after "ok: FILE: "
	}{
		{"two-region.yaml", "2 regions, 2 clusters, 2 gateways, 1 links, 1 routes (1 legs)"},
		{"satellite-fleet.yaml", "4 regions, 4 clusters, 5 gateways, 3 links, 5 routes (6 legs)"},
		{"amqp-relay.yaml", "3 regions, 3 clusters, 3 gateways, 2 links, 2 routes (2 legs)"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			// A copy, with the certificates it names (validate checks them).
			dir := copyTopology(t, filepath.Join("..", "..", "examples", tt.file))
			path := filepath.Join(dir, tt.file)
			writeCertsFor(t, path, map[string]string{"MERIDIAN_HQ_KAFKA_PASSWORD": "x", "MERIDIAN_DR_KAFKA_PASSWORD": "x", "MERIDIAN_RELAY_PASSWORD": "x"})
			r := meridian(t, "", fleetEnv, "validate", "-f", path)
			want := fmt.Sprintf("ok: %s: %s\n", path, tt.want)
			if r.code != 0 || r.stdout != want {
				t.Errorf("meridian validate -f %s:\n%v\nwant exit status 0 and stdout %q", path, r, want)
			}

			r = meridian(t, "", fleetEnv, "validate", "-f", path, "--output", "json")
			var got struct {
				OK      bool    `json:"ok"`
				File    string  `json:"file"`
				Summary summary `json:"summary"`
			}
			if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || r.code != 0 {
				t.Fatalf("meridian validate --output json: %v\n%v", err, r)
			}
			if !got.OK || got.File != path || got.Summary.Gateways == 0 || got.Summary.Legs == 0 {
				t.Errorf("validate --output json = %+v, want ok with a summary", got)
			}
		})
	}
}

// TestValidateFleetNeedsEnv: the fleet example's SASL passwords come from
// the environment. Without them validate warns at each one's line and goes
// on (a CI job lints files without the production secrets); with
// --require-env, as run does, each is an error.
func TestValidateFleetNeedsEnv(t *testing.T) {
	dir := copyTopology(t, filepath.Join("..", "..", "examples", "satellite-fleet.yaml"))
	path := filepath.Join(dir, "satellite-fleet.yaml")
	writeCertsFor(t, path, map[string]string{"MERIDIAN_HQ_KAFKA_PASSWORD": "hq-secret", "MERIDIAN_DR_KAFKA_PASSWORD": "dr-secret"})
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MERIDIAN_HQ_KAFKA_PASSWORD=") && !strings.HasPrefix(kv, "MERIDIAN_DR_KAFKA_PASSWORD=") {
			env = append(env, kv)
		}
	}
	at := []string{":68:21: regions[2].clusters[0].sasl.password: environment variable MERIDIAN_HQ_KAFKA_PASSWORD is not set",
		":102:21: regions[3].clusters[0].sasl.password: environment variable MERIDIAN_DR_KAFKA_PASSWORD is not set"}
	r := meridianEnv(t, "", env, "validate", "-f", path)
	wantWarn := "warning: " + path + at[0] + ": meridian run refuses the file without it (validate --require-env makes this an error)\n" +
		"warning: " + path + at[1] + ": meridian run refuses the file without it (validate --require-env makes this an error)\n"
	if r.code != 0 || r.stderr != wantWarn || !strings.HasPrefix(r.stdout, "ok: ") {
		t.Errorf("meridian validate -f %s without the passwords:\n%v\nwant exit status 0 and on stderr\n%s", path, r, wantWarn)
	}
	r = meridianEnv(t, "", env, "validate", "-f", path, "-o", "json")
	var out struct {
		OK       bool `json:"ok"`
		Warnings []struct {
			Line int    `json:"line"`
			Col  int    `json:"col"`
			Path string `json:"path"`
		} `json:"warnings"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || !out.OK || len(out.Warnings) != 2 || out.Warnings[0].Line != 68 || out.Warnings[1].Path != "regions[3].clusters[0].sasl.password" {
		t.Errorf("meridian validate -o json without the passwords: %v, %+v\n%v", err, out, r)
	}
	r = meridianEnv(t, "", env, "validate", "-f", path, "--require-env")
	want := path + at[0] + "\n" + path + at[1] + "\n"
	if r.code != 1 || r.stdout != want {
		t.Errorf("meridian validate --require-env -f %s without the passwords:\n%v\nwant exit status 1 and stdout\n%s", path, r, want)
	}
	// run refuses it whatever validate says.
	r = meridianEnv(t, "", env, "run", "-f", path, "--gateway", "hq-a")
	if r.code != 1 || !strings.Contains(r.stderr+r.stdout, "environment variable MERIDIAN_HQ_KAFKA_PASSWORD is not set") {
		t.Errorf("meridian run without the passwords:\n%v\nwant exit 1 naming the variable", r)
	}
}

// problemLine is the documented form of a validate problem.
var problemLine = regexp.MustCompile(`^[^:]+\.yaml:\d+:\d+: [a-z_\[\]0-9.]+: .+$`)

// TestValidateBadFiles runs validate on the files under testdata/validate
// and compares the problems with their .golden files.
func TestValidateBadFiles(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "validate", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata/validate/*.yaml: %v", err)
	}
	for _, path := range files {
		name := filepath.Base(path)
		t.Run(strings.TrimSuffix(name, ".yaml"), func(t *testing.T) {
			// Run in a copy with the certificates the file names (see
			// writeCertsFor), so that the file name in each problem is the
			// bare name.
			dir := copyTopology(t, path)
			writeCertsFor(t, filepath.Join(dir, name), nil)
			r := meridian(t, dir, nil, "validate", "-f", name)
			if r.code != 1 || r.stderr != "" {
				t.Errorf("meridian validate -f %s: %v\nwant exit status 1 and nothing on stderr", name, r)
			}
			lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
			for _, l := range lines {
				if !problemLine.MatchString(l) || !strings.HasPrefix(l, name+":") {
					t.Errorf("problem line %q is not FILE:LINE:COL: PATH: reason", l)
				}
			}
			checkGolden(t, filepath.Join("validate", strings.TrimSuffix(name, ".yaml")+".golden"), r.stdout)

			// --output json holds the same problems.
			r = meridian(t, dir, nil, "validate", "-f", name, "--output", "json")
			if r.code != 1 {
				t.Errorf("meridian validate --output json: %v\nwant exit status 1", r)
			}
			var got struct {
				OK       *bool          `json:"ok"`
				File     string         `json:"file"`
				Problems []config.Error `json:"problems"`
			}
			dec := json.NewDecoder(bytes.NewReader([]byte(r.stdout)))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&got); err != nil {
				t.Fatalf("validate --output json: %v\n%s", err, r.stdout)
			}
			if got.OK == nil || *got.OK || got.File != name {
				t.Errorf("validate --output json: ok=%v file=%q, want ok=false file=%q", got.OK, got.File, name)
			}
			var fromJSON []string
			for _, p := range got.Problems {
				if p.File != name || p.Line == 0 || p.Col == 0 || p.Path == "" || p.Reason == "" {
					t.Errorf("problem %+v lacks a field", p)
				}
				fromJSON = append(fromJSON, p.Error())
			}
			if g, w := strings.Join(fromJSON, "\n"), strings.Join(lines, "\n"); g != w {
				t.Errorf("JSON problems differ from the text output\n--- json:\n%s\n--- text:\n%s", g, w)
			}
		})
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args       []string
		wantStderr string
	}{
		{[]string{"validate"}, `required flag(s) "file" not set`},
		{[]string{"run", "--gateway", "x"}, `required flag(s) "file" not set`},
		{[]string{"validate", "-f", "x.yaml", "--output", "yaml"}, `--output "yaml": want text or json`},
		{[]string{"no-such-command"}, `unknown command "no-such-command"`},
		{[]string{"version", "--no-such-flag"}, `unknown flag: --no-such-flag`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := meridian(t, "", nil, tt.args...)
			if r.code != 2 || !strings.Contains(r.stderr, tt.wantStderr) {
				t.Errorf("meridian %s:\n%v\nwant exit status 2 and stderr containing %q", strings.Join(tt.args, " "), r, tt.wantStderr)
			}
		})
	}
}

func TestValidateMissingFile(t *testing.T) {
	r := meridian(t, "", nil, "validate", "-f", filepath.Join(t.TempDir(), "nope.yaml"))
	if r.code != 1 || !strings.Contains(r.stdout, "nope.yaml") {
		t.Errorf("validate of a missing file:\n%v\nwant exit status 1 naming the file", r)
	}
}

func TestCerts(t *testing.T) {
	dir := t.TempDir()
	topo := writeTopology(t, dir, topoParams{
		SrcBootstrap: "127.0.0.1:1", DstBootstrap: "127.0.0.1:2",
		EastListen: "127.0.0.1:7443", WestListen: "127.0.0.1:7444",
		EastAdmin: "127.0.0.1:9180", WestAdmin: "127.0.0.1:9181",
	})
	out := filepath.Join(dir, "certs")
	r := meridian(t, dir, nil, "certs", "--out", out, "-f", topo)
	if r.code != 0 {
		t.Fatalf("meridian certs: %v", r)
	}
	files := []string{"ca.crt", "ca.key", "east-gw.crt", "east-gw.key", "west-gw.crt", "west-gw.key"}
	read := func() map[string][]byte {
		m := map[string][]byte{}
		for _, f := range files {
			b, err := os.ReadFile(filepath.Join(out, f))
			if err != nil {
				t.Fatalf("meridian certs did not write %s: %v\n%v", f, err, r)
			}
			if !bytes.HasPrefix(b, []byte("-----BEGIN ")) {
				t.Errorf("%s is not PEM: %.40q", f, b)
			}
			if strings.HasSuffix(f, ".key") {
				st, err := os.Stat(filepath.Join(out, f))
				if err == nil && st.Mode().Perm() != 0o600 {
					t.Errorf("%s has mode %v, want 0600", f, st.Mode().Perm())
				}
			}
			m[f] = b
		}
		return m
	}
	first := read()
	for _, f := range []string{"ca.crt", "ca.key", "east-gw.crt", "west-gw.crt"} {
		if !strings.Contains(r.stdout, filepath.Join(out, strings.TrimSuffix(f, filepath.Ext(f)))) {
			t.Errorf("certs stdout does not mention %s:\n%s", f, r.stdout)
		}
	}

	// Again: the CA is reused (byte for byte), gateway certificates are new.
	r = meridian(t, dir, nil, "certs", "--out", out, "-f", topo)
	if r.code != 0 {
		t.Fatalf("meridian certs (again): %v", r)
	}
	second := read()
	if !bytes.Equal(first["ca.crt"], second["ca.crt"]) || !bytes.Equal(first["ca.key"], second["ca.key"]) {
		t.Errorf("second `meridian certs` replaced the CA, want ca.crt and ca.key reused")
	}
	if bytes.Equal(first["east-gw.crt"], second["east-gw.crt"]) {
		t.Errorf("second `meridian certs` left east-gw.crt as it was, want a new certificate")
	}

	for _, gw := range []string{"east-gw", "west-gw"} {
		checkGatewayCert(t, second["ca.crt"], second[gw+".crt"], gw)
	}

	// Neither -f nor --gateway: usage error.
	if r := meridian(t, dir, nil, "certs", "--out", out); r.code != 2 {
		t.Errorf("meridian certs without gateways: %v\nwant exit status 2", r)
	}
	// A CA certificate without its key is refused rather than replaced.
	if err := os.Remove(filepath.Join(out, "ca.key")); err != nil {
		t.Fatal(err)
	}
	if r := meridian(t, dir, nil, "certs", "--out", out, "-f", topo); r.code != 1 || !strings.Contains(r.stderr, "ca.key") {
		t.Errorf("meridian certs with ca.crt but no ca.key: %v\nwant exit status 1 naming ca.key", r)
	}
	if b, _ := os.ReadFile(filepath.Join(out, "ca.crt")); !bytes.Equal(b, first["ca.crt"]) {
		t.Errorf("meridian certs with ca.crt but no ca.key rewrote ca.crt")
	}
}

// checkGatewayCert verifies that certPEM was issued by caPEM to gateway
// name, for both ends of a link, and is valid for its name and loopback.
func checkGatewayCert(t *testing.T, caPEM, certPEM []byte, name string) {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.crt holds no certificate")
	}
	blk, _ := pem.Decode(certPEM)
	if blk == nil {
		t.Fatalf("%s.crt holds no PEM block", name)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatalf("%s.crt: %v", name, err)
	}
	if cert.Subject.CommonName != name {
		t.Errorf("%s.crt: common name %q, want %q", name, cert.Subject.CommonName, name)
	}
	if len(cert.URIs) != 1 || cert.URIs[0].String() != "meridian://gateway/"+name {
		t.Errorf("%s.crt: URI SANs %v, want [meridian://gateway/%s]", name, cert.URIs, name)
	}
	for _, host := range []string{name, "127.0.0.1", "localhost"} {
		if err := cert.VerifyHostname(host); err != nil {
			t.Errorf("%s.crt: %v", name, err)
		}
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Errorf("%s.crt does not verify against ca.crt for %v: %v", name, usage, err)
		}
	}
}

// TestRunBadInput: run refuses what it cannot run, naming the reason.
func TestRunBadInput(t *testing.T) {
	dir := t.TempDir()
	p := topoParams{
		SrcBootstrap: "127.0.0.1:1", DstBootstrap: "127.0.0.1:2",
		EastListen: freeUDPAddr(t), WestListen: freeUDPAddr(t),
		EastAdmin: freeTCPAddr(t), WestAdmin: freeTCPAddr(t),
	}
	topo := writeTopology(t, dir, p)

	t.Run("unknown gateway", func(t *testing.T) {
		r := meridian(t, dir, nil, "run", "-f", topo, "--gateway", "nope")
		if r.code != 1 || !strings.Contains(r.stderr, `no gateway "nope"`) || !strings.Contains(r.stderr, "[east-gw west-gw]") {
			t.Errorf("meridian run --gateway nope:\n%v\nwant exit status 1 naming nope and listing east-gw and west-gw", r)
		}
	})
	t.Run("missing cert file", func(t *testing.T) {
		// The topology names certs/*.crt, which were never made.
		r := meridian(t, dir, nil, "run", "-f", topo, "--gateway", "west-gw")
		namesFile := strings.Contains(r.stderr, filepath.Join("certs", "ca.crt")) || strings.Contains(r.stderr, filepath.Join("certs", "west-gw.crt"))
		if r.code != 1 || !namesFile || !strings.Contains(r.stderr, "west-gw") {
			t.Errorf("meridian run with no certificate files:\n%v\nwant exit status 1 naming the gateway and a missing file", r)
		}
	})
	t.Run("missing gateway cert only", func(t *testing.T) {
		// The CA exists, the gateway's own certificate does not.
		if r := meridian(t, dir, nil, "certs", "--out", "certs", "--gateway", "east-gw"); r.code != 0 {
			t.Fatalf("meridian certs: %v", r)
		}
		r := meridian(t, dir, nil, "run", "-f", topo, "--gateway", "west-gw")
		if r.code != 1 || !strings.Contains(r.stderr, filepath.Join("certs", "west-gw.crt")) {
			t.Errorf("meridian run without west-gw.crt:\n%v\nwant exit status 1 naming certs/west-gw.crt", r)
		}
	})
	t.Run("invalid file", func(t *testing.T) {
		r := meridian(t, "", nil, "run", "-f", filepath.Join("testdata", "validate", "dangling-route.yaml"), "--gateway", "east-gw")
		if r.code != 1 || !strings.Contains(r.stderr, `unknown field "colour"`) {
			t.Errorf("meridian run on an invalid file:\n%v\nwant exit status 1 with the problems", r)
		}
	})
}

func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("the demo mirrors for 3 s plus setup and read-back")
	}
	r := meridian(t, "", nil, "demo", "--duration", "3s", "--output", "json", "--profile", "lan")
	if r.code != 0 {
		t.Fatalf("meridian demo: %v", r)
	}
	var sum struct {
		Produced   *int64 `json:"produced"`
		Mirrored   *int64 `json:"mirrored"`
		Lost       *int64 `json:"lost"`
		Duplicated *int64 `json:"duplicated"`
		Reordered  *int64 `json:"reordered"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &sum); err != nil {
		t.Fatalf("demo --output json: stdout is not JSON: %v\n%v", err, r)
	}
	if sum.Produced == nil || sum.Mirrored == nil || sum.Lost == nil || sum.Duplicated == nil || sum.Reordered == nil {
		t.Fatalf("demo JSON lacks a field: %s", r.stdout)
	}
	if *sum.Produced <= 0 || *sum.Mirrored != *sum.Produced || *sum.Lost != 0 || *sum.Duplicated != 0 || *sum.Reordered != 0 {
		t.Errorf("demo: produced=%d mirrored=%d lost=%d duplicated=%d reordered=%d, want produced>0 = mirrored, no loss, duplicates or reordering",
			*sum.Produced, *sum.Mirrored, *sum.Lost, *sum.Duplicated, *sum.Reordered)
	}
	if strings.Contains(r.stderr, "panic") {
		t.Errorf("demo stderr mentions a panic:\n%s", r.stderr)
	}
}

func TestStatusUnreachable(t *testing.T) {
	addr := freeTCPAddr(t) // nothing listens there
	r := meridian(t, "", nil, "status", "--admin", addr)
	if r.code != 1 || !strings.Contains(r.stderr, addr) || !strings.Contains(r.stderr, "unreachable") {
		t.Errorf("meridian status --admin %s with no gateway:\n%v\nwant exit status 1 naming the address as unreachable", addr, r)
	}
}

// TestValidateProbesGateway: validate binds nothing unless asked; with
// --gateway it test-binds that gateway's addresses and reports a taken one
// at its setting.
func TestValidateProbesGateway(t *testing.T) {
	dir := t.TempDir()
	p := topoParams{
		SrcBootstrap: "127.0.0.1:1", DstBootstrap: "127.0.0.1:2",
		EastListen: freeUDPAddr(t), WestListen: freeUDPAddr(t),
		EastAdmin: freeTCPAddr(t), WestAdmin: freeTCPAddr(t),
	}
	topo := writeTopology(t, dir, p)
	if r := meridian(t, dir, nil, "certs", "--out", "certs", "-f", topo); r.code != 0 {
		t.Fatalf("meridian certs: %v", r)
	}
	ln, err := net.Listen("tcp", p.WestAdmin)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pc, err := net.ListenPacket("udp", p.WestListen)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if r := meridian(t, dir, nil, "validate", "-f", "topology.yaml"); r.code != 0 {
		t.Errorf("validate without --gateway while west's addresses are taken: %v, want exit 0 (it binds nothing)", r)
	}
	if r := meridian(t, dir, nil, "validate", "-f", "topology.yaml", "--gateway", "east-gw"); r.code != 0 {
		t.Errorf("validate --gateway east-gw: %v, want exit 0", r)
	}
	r := meridian(t, dir, nil, "validate", "-f", "topology.yaml", "--gateway", "west-gw")
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if r.code != 1 || len(lines) != 2 ||
		!strings.HasPrefix(lines[0], "topology.yaml:") || !strings.Contains(lines[0], ": regions[1].gateways[0].listen: cannot bind: ") ||
		!strings.Contains(lines[1], ": regions[1].gateways[0].admin: cannot bind: ") {
		t.Errorf("validate --gateway west-gw with its addresses taken: %v\nwant exit 1 with the listen and admin settings", r)
	}
	if r := meridian(t, dir, nil, "validate", "-f", "topology.yaml", "--gateway", "nope"); r.code != 1 || !strings.Contains(r.stdout, `no gateway "nope"`) {
		t.Errorf("validate --gateway nope: %v, want exit 1 naming it", r)
	}
}

// TestValidateWarnsOpenAdmin: an admin API on all interfaces without a
// token or mTLS is a warning (validation still passes); with a token over
// mTLS it is not.
func TestValidateWarnsOpenAdmin(t *testing.T) {
	dir := t.TempDir()
	p := topoParams{
		SrcBootstrap: "127.0.0.1:1", DstBootstrap: "127.0.0.1:2",
		EastListen: freeUDPAddr(t), WestListen: freeUDPAddr(t),
		EastAdmin: "0.0.0.0:9180", WestAdmin: `{listen: ":9181", token: "${MERIDIAN_TEST_ADMIN_TOKEN}", mtls: true}`,
	}
	writeTopology(t, dir, p)
	env := []string{"MERIDIAN_TEST_ADMIN_TOKEN=0123456789abcdef-x"}
	if r := meridian(t, dir, env, "certs", "--out", "certs", "-f", "topology.yaml"); r.code != 0 {
		t.Fatalf("meridian certs: %v", r)
	}
	r := meridian(t, dir, env, "validate", "-f", "topology.yaml")
	if r.code != 0 || !strings.Contains(r.stderr, "warning: ") || !strings.Contains(r.stderr, "regions[0].gateways[0].admin: admin API 0.0.0.0:9180 listens on all interfaces without authentication") {
		t.Errorf("validate: %v\nwant exit 0 and a warning about east-gw's admin", r)
	}
	if strings.Contains(r.stderr, "regions[1]") {
		t.Errorf("validate warns about west-gw's admin, which has a token and mTLS:\n%s", r.stderr)
	}
}

// TestSchemaCommand: meridian schema prints the shipped schema file.
func TestSchemaCommand(t *testing.T) {
	r := meridian(t, "", nil, "schema")
	want, err := os.ReadFile("../../config/topology.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	if r.code != 0 || r.stdout != string(want) {
		t.Errorf("meridian schema: exit %d, %d bytes; want the %d bytes of config/topology.schema.json", r.code, len(r.stdout), len(want))
	}
}

// TestValidateWarnsFilteredPassthrough: filtered routes over a passthrough
// link validate, with a warning at each route's filter that passthrough
// does not apply to it.
func TestValidateWarnsFilteredPassthrough(t *testing.T) {
	const name = "filter-passthrough.yaml"
	dir := copyTopology(t, filepath.Join("testdata", name))
	writeCertsFor(t, filepath.Join(dir, name), nil)
	r := meridian(t, dir, nil, "validate", "-f", name)
	want := []string{
		`warning: filter-passthrough.yaml:31:13: routes[0].filter: passthrough (link "east--west") does not apply to this route: a filtered leg decodes its source batches to evaluate the filter and sends records`,
		`warning: filter-passthrough.yaml:37:13: routes[1].filter: passthrough (link "east--west") does not apply to this route: a filtered leg decodes its source batches to evaluate the filter and sends records`,
	}
	if r.code != 0 || strings.TrimSpace(r.stderr) != strings.Join(want, "\n") || !strings.HasPrefix(r.stdout, "ok: ") {
		t.Errorf("meridian validate -f %s: %v\nwant exit 0 and the warnings\n%s", name, r, strings.Join(want, "\n"))
	}
}

// TestValidateWarnsRouteCycles: topologies whose routes form cycles over
// clusters (active-active) validate, with a warning per cycle naming its
// routes and how loops are prevented; golden files hold validate's stdout
// and stderr (-update rewrites them).
func TestValidateWarnsRouteCycles(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "validate-warnings", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata/validate-warnings/*.yaml: %v", err)
	}
	for _, path := range files {
		name := filepath.Base(path)
		t.Run(strings.TrimSuffix(name, ".yaml"), func(t *testing.T) {
			dir := copyTopology(t, path)
			writeCertsFor(t, filepath.Join(dir, name), nil)
			r := meridian(t, dir, nil, "validate", "-f", name)
			if r.code != 0 || !strings.HasPrefix(r.stdout, "ok: ") {
				t.Errorf("meridian validate -f %s: %v\nwant exit 0", name, r)
			}
			checkGolden(t, filepath.Join("validate-warnings", strings.TrimSuffix(name, ".yaml")+".golden"), "stdout:\n"+r.stdout+"stderr:\n"+r.stderr)
		})
	}
}
