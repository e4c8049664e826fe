package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func parseTestFile(t *testing.T, path string) *File {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, errs := parse(filepath.Base(path), data, lookupTestEnv)
	if len(errs) > 0 {
		t.Fatalf("%s: unexpected errors:\n%v", path, errs)
	}
	if f == nil {
		t.Fatalf("%s: nil *File without errors", path)
	}
	return f
}

func TestGoodFiles(t *testing.T) {
	files, err := filepath.Glob("testdata/good/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no good files")
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			f := parseTestFile(t, path)
			// A parsed file is defaulted and valid: doing both again
			// changes nothing and finds nothing.
			before := clone(t, f)
			applyDefaults(f)
			if !reflect.DeepEqual(before, f) {
				t.Errorf("applyDefaults is not idempotent:\nbefore %+v\nafter  %+v", before, f)
			}
			if errs := validate(f, "x.yaml", nil, nil, nil); len(errs) > 0 {
				t.Errorf("validate on a parsed file: %v", errs)
			}
		})
	}
}

// clone deep-copies f by parsing nothing: reflect.DeepEqual needs a copy
// whose pointers differ, so round-trip through a shallow walk.
func clone(t *testing.T, f *File) *File {
	t.Helper()
	c := *f
	c.Regions = nil
	for _, r := range f.Regions {
		r2 := r
		r2.Clusters = nil
		for _, cl := range r.Clusters {
			if cl.TLS != nil {
				tls := *cl.TLS
				cl.TLS = &tls
			}
			r2.Clusters = append(r2.Clusters, cl)
		}
		r2.Gateways = nil
		for _, g := range r.Gateways {
			if g.TLS != nil {
				tls := *g.TLS
				g.TLS = &tls
			}
			r2.Gateways = append(r2.Gateways, g)
		}
		c.Regions = append(c.Regions, r2)
	}
	c.Links = append([]Link(nil), f.Links...)
	c.Routes = append([]Route(nil), f.Routes...)
	return &c
}

func TestDefaults(t *testing.T) {
	f := parseTestFile(t, "testdata/good/minimal.yaml")
	l := f.Links[0]
	for _, c := range []struct{ field, got, want string }{
		{"link name", l.Name, "east--west"},
		{"link transport", l.Transport, "quic"},
		{"link compression", l.Compression, "zstd"},
		{"link profile", l.Profile, "wan"},
		{"route rename", f.Routes[0].Rename, "{topic}"},
		{"route start_at", f.Routes[0].StartAt, "earliest"},
	} {
		if c.got != c.want {
			t.Errorf("%s: got %q, want %q", c.field, c.got, c.want)
		}
	}
	if l.RateLimit != 0 || l.Window != 0 {
		t.Errorf("link rate_limit, window: got %v, %v; want 0 (unlimited, from profile)", l.RateLimit, l.Window)
	}
	if got := f.Routes[0].Discover; got != 2*time.Second {
		t.Errorf("route discover: got %v, want 2s", got)
	}
	for _, r := range f.Regions {
		for _, g := range r.Gateways {
			if g.TLS.Enabled == nil || !*g.TLS.Enabled {
				t.Errorf("gateway %s: tls.enabled = %v, want true", g.Name, g.TLS.Enabled)
			}
		}
		for _, c := range r.Clusters {
			if c.TLS != nil {
				t.Errorf("cluster %s: tls = %+v, want nil (plaintext)", c.Name, c.TLS)
			}
		}
	}
	if f.Gossip != nil || f.Defaults != nil {
		t.Errorf("gossip = %v, defaults = %v; want nil", f.Gossip, f.Defaults)
	}
}

func TestFullFile(t *testing.T) {
	f := parseTestFile(t, "testdata/good/full.yaml")

	// Links take defaults.compression and defaults.profile; names come
	// from "between", with "/" turned into ".".
	if got, want := f.Links[0], (Link{
		Name: "east.east-a--west", Between: []string{"east/east-a", "west"},
		Transport: "quic", Profile: "lan", Compression: "s2", RateLimit: 1_500_000_000, Window: 64 << 20, Passthrough: true,
	}); !reflect.DeepEqual(got, want) {
		t.Errorf("links[0]:\n got %+v\nwant %+v", got, want)
	}
	if got := f.Links[1].Compression; got != "none" {
		t.Errorf("links[1].compression = %q, want none", got)
	}

	east, west := f.Regions[0], f.Regions[1]
	if got := east.Clusters[0].SASL.Password; got != "s3cret" {
		t.Errorf("password = %q, want the value of MERIDIAN_TEST_PASSWORD", got)
	}
	if got, want := f.Metadata["note"], "costs $$5 a month; literal ${NOT_EXPANDED}"; got != want {
		t.Errorf("metadata note = %q, want %q", got, want)
	}
	// Aliases share values; merge keys let a mapping override some keys.
	if west.Clusters[0].SASL.Username != "meridian" || west.Clusters[0].TLS.ServerName != "kafka.internal" {
		t.Errorf("aliased sasl/tls not applied: %+v %+v", west.Clusters[0].SASL, west.Clusters[0].TLS)
	}
	if got, want := *east.Gateways[1].TLS, (TLS{
		Enabled: east.Gateways[1].TLS.Enabled, CAFile: "certs/ca.crt",
		CertFile: "certs/east-b.crt", KeyFile: "certs/east-b.key",
	}); got != want {
		t.Errorf("merged tls: got %+v, want %+v", got, want)
	}
	if e := east.Clusters[1].TLS.Enabled; e == nil || *e {
		t.Errorf("explicit tls.enabled: false was overridden: %v", e)
	}
	if got, want := east.Clusters[0].Bootstrap, []string{"kafka-1.east:9093", "[fd00::1]:9093"}; !reflect.DeepEqual(got, want) {
		t.Errorf("bootstrap = %q, want %q", got, want)
	}
	r := f.Routes[0]
	if !strings.HasPrefix(r.Filter, `!("test" in headers)`) {
		t.Errorf("route orders filter = %q", r.Filter)
	}
	if r.StartAt != "latest" || r.Discover != 30*time.Second || r.Priority != 5 || len(r.Topics.Exclude) != 2 {
		t.Errorf("route orders = %+v", r)
	}
	if len(f.Gossip.Keys) != 2 {
		t.Errorf("gossip keys = %d, want 2", len(f.Gossip.Keys))
	}
}

// exampleEnv sets what the examples read from the environment.
func exampleEnv(t *testing.T) {
	t.Setenv("MERIDIAN_HQ_KAFKA_PASSWORD", "hq-s3cret")
	t.Setenv("MERIDIAN_DR_KAFKA_PASSWORD", "dr-s3cret")
	t.Setenv("MERIDIAN_RELAY_PASSWORD", "relay-s3cret")
}

func TestExamples(t *testing.T) {
	exampleEnv(t)
	files, err := filepath.Glob("../examples/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 2 {
		t.Fatalf("found %d examples, want at least 2", len(files))
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			if _, err := Load(path); err != nil {
				t.Fatalf("Load(%s):\n%v", path, err)
			}
		})
	}
}

func TestExampleTwoRegion(t *testing.T) {
	f, err := Load("../examples/two-region.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := regionNames(f); !reflect.DeepEqual(got, []string{"east", "west"}) {
		t.Errorf("regions = %q", got)
	}
	l := f.Links[0]
	if l.Name != "east--west" || l.Transport != "quic" || l.Profile != "wan" {
		t.Errorf("link = %+v", l)
	}
	r := f.Routes[0]
	want := Route{
		Name: "orders", From: "east/kafka", To: []string{"west/kafka"},
		Topics: TopicFilter{Include: []string{`^orders\.`}, Exclude: []string{`\.tmp$`}},
		Rename: "{topic}", StartAt: "earliest", Discover: 2 * time.Second, MaxPartitions: DefaultMaxPartitions, ShareTimeout: 10 * time.Second,
	}
	if !reflect.DeepEqual(r, want) {
		t.Errorf("route:\n got %+v\nwant %+v", r, want)
	}
}

func TestExampleSatelliteFleet(t *testing.T) {
	exampleEnv(t)
	f, err := Load("../examples/satellite-fleet.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := regionNames(f), []string{"vessel-7", "vessel-9", "hq", "dr"}; !reflect.DeepEqual(got, want) {
		t.Errorf("regions = %q, want %q", got, want)
	}
	profiles := map[string]string{}
	for _, l := range f.Links {
		profiles[l.Name] = l.Profile + "/" + l.Compression
	}
	if want := map[string]string{
		"vessel-7--hq": "geo-satellite/zstd",
		"vessel-9--hq": "geo-satellite/zstd",
		"hq--dr":       "wan/zstd",
	}; !reflect.DeepEqual(profiles, want) {
		t.Errorf("links = %v, want %v", profiles, want)
	}
	for _, name := range []string{"telemetry-vessel-7", "telemetry-vessel-9"} {
		r := findRoute(f, name)
		if r == nil || r.Rename != "{source_region}.{topic}" || !reflect.DeepEqual(r.To, []string{"hq/kafka"}) {
			t.Errorf("route %s = %+v", name, r)
		}
	}
	for _, l := range f.Links {
		// The ships sit behind carrier NAT: they dial.
		if want := map[string]string{"vessel-7--hq": "vessel-7", "vessel-9--hq": "vessel-9"}[l.Name]; l.Dial != want {
			t.Errorf("link %s: dial %q, want %q", l.Name, l.Dial, want)
		}
	}
	if r := findRoute(f, "hq-to-dr"); r == nil || r.From != "hq/kafka" || !reflect.DeepEqual(r.Topics.Include, []string{"^vessel-.*"}) {
		t.Errorf("route hq-to-dr = %+v", r)
	}
	_, hq, _ := f.Cluster("hq/kafka")
	if hq.SASL.Password != "hq-s3cret" {
		t.Errorf("hq password not taken from MERIDIAN_HQ_KAFKA_PASSWORD")
	}
}

func TestExampleNeedsEnv(t *testing.T) {
	data, err := os.ReadFile("../examples/satellite-fleet.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, errs := parse("satellite-fleet.yaml", data, func(string) (string, bool) { return "", false })
	var reasons []string
	for _, e := range errs {
		reasons = append(reasons, e.Reason)
	}
	want := []string{
		"environment variable MERIDIAN_HQ_KAFKA_PASSWORD is not set",
		"environment variable MERIDIAN_DR_KAFKA_PASSWORD is not set",
	}
	if !reflect.DeepEqual(reasons, want) {
		t.Errorf("got %q, want %q", reasons, want)
	}
}

func regionNames(f *File) []string {
	var names []string
	for _, r := range f.Regions {
		names = append(names, r.Name)
	}
	return names
}

func findRoute(f *File, name string) *Route {
	for i := range f.Routes {
		if f.Routes[i].Name == name {
			return &f.Routes[i]
		}
	}
	return nil
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load of a missing file: %v, want os.ErrNotExist", err)
	}
	if !strings.HasPrefix(err.Error(), "load config: ") {
		t.Errorf("error %q lacks the operation prefix", err)
	}
}

func TestErrorFormat(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{&Error{File: "t.yaml", Line: 14, Col: 5, Path: "routes[2].from", Reason: `unknown cluster "hq/kafka-x"`},
			`t.yaml:14:5: routes[2].from: unknown cluster "hq/kafka-x"`},
		{&Error{File: "t.yaml", Line: 1, Col: 1, Reason: "invalid YAML: oops"}, "t.yaml:1:1: invalid YAML: oops"},
		{Errors{{File: "a", Line: 1, Col: 2, Path: "p", Reason: "r1"}, {File: "a", Line: 3, Col: 4, Path: "q", Reason: "r2"}},
			"a:1:2: p: r1\na:3:4: q: r2"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
	}
}

func TestParseValid(t *testing.T) {
	data, err := os.ReadFile("testdata/good/minimal.yaml")
	if err != nil {
		t.Fatal(err)
	}
	f, err := Parse("minimal.yaml", data)
	if err != nil || f == nil {
		t.Fatalf("Parse = %v, %v", f, err)
	}
}

func TestRefs(t *testing.T) {
	f := parseTestFile(t, "testdata/good/full.yaml")

	for _, tt := range []struct {
		ref          string
		region, name string
		ok           bool
	}{
		{"hq/kafka", "hq", "kafka", true},
		{"hq", "", "", false},
		{"/kafka", "", "", false},
		{"hq/", "", "", false},
		{"a/b/c", "", "", false},
		{"", "", "", false},
	} {
		r, n, ok := SplitRef(tt.ref)
		if r != tt.region || n != tt.name || ok != tt.ok {
			t.Errorf("SplitRef(%q) = %q, %q, %v; want %q, %q, %v", tt.ref, r, n, ok, tt.region, tt.name, tt.ok)
		}
	}

	if r, c, ok := f.Cluster("east/audit"); !ok || r.Name != "east" || c.Name != "audit" {
		t.Errorf("Cluster(east/audit) = %v, %v, %v", r, c, ok)
	} else if c != &f.Regions[0].Clusters[1] {
		t.Errorf("Cluster does not point into the File")
	}
	for _, ref := range []string{"west/audit", "north/kafka", "kafka", ""} {
		if _, _, ok := f.Cluster(ref); ok {
			t.Errorf("Cluster(%q) found something", ref)
		}
	}
	for _, tt := range []struct{ name, region string }{
		{"east-b", "east"}, {"west-a", "west"}, {"east/east-a", "east"},
	} {
		r, g, ok := f.Gateway(tt.name)
		if !ok || r.Name != tt.region || !strings.HasSuffix(tt.name, g.Name) {
			t.Errorf("Gateway(%q) = %v, %v, %v", tt.name, r, g, ok)
		}
	}
	for _, name := range []string{"west/east-a", "nope", "east/"} {
		if _, _, ok := f.Gateway(name); ok {
			t.Errorf("Gateway(%q) found something", name)
		}
	}
	if r, ok := f.Region("west"); !ok || r != &f.Regions[1] {
		t.Errorf("Region(west) = %v, %v", r, ok)
	}
}

func TestExpand(t *testing.T) {
	env := map[string]string{"A": "x", "EMPTY": ""}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	tests := []struct {
		in, want string
		errs     []string
	}{
		{"plain", "plain", nil},
		{"${A}", "x", nil},
		{"pre-${A}-post", "pre-x-post", nil},
		{"${EMPTY}", "", nil},
		{"$${A}", "${A}", nil},
		{"$$${A}", "$${A}", nil}, // leftmost first: "$" then the "$${" escape
		{`\.tmp$`, `\.tmp$`, nil},
		{"cost $5 {A}", "cost $5 {A}", nil},
		{"${NOPE}", "", []string{"environment variable NOPE is not set"}},
		{"${NOPE}${NADA}", "", []string{"environment variable NOPE is not set", "environment variable NADA is not set"}},
		{"${A", "", []string{`unclosed "${" (write "$${" for a literal "${")`}},
		{"${}", "", []string{`invalid environment variable name "" in "${}" (use letters, digits and _; write "$${" for a literal "${")`}},
		{"${1X}", "", []string{`invalid environment variable name "1X" in "${1X}" (use letters, digits and _; write "$${" for a literal "${")`}},
	}
	for _, tt := range tests {
		got, errs := expand(tt.in, lookup)
		if len(errs) == 0 && got != tt.want || !reflect.DeepEqual(errs, tt.errs) {
			t.Errorf("expand(%q) = %q, %q; want %q, %q", tt.in, got, errs, tt.want, tt.errs)
		}
	}
}

// TestEnvOnlyInStrings checks that ${...} is expanded in string values
// only: not in keys, and a number stays a number.
func TestEnvOnlyInStrings(t *testing.T) {
	data, err := os.ReadFile("testdata/good/minimal.yaml")
	if err != nil {
		t.Fatal(err)
	}
	src := strings.Replace(string(data), "version: 1", "version: 1\nmetadata:\n  ${A}: ${A}", 1)
	f, errs := parse("m.yaml", []byte(src), func(k string) (string, bool) { return "v-" + k, true })
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if got := f.Metadata["${A}"]; got != "v-A" {
		t.Errorf("metadata = %v, want key ${A} (unexpanded) with value v-A", f.Metadata)
	}
}

// TestAliasBomb checks that aliases cannot blow a small file up into
// millions of values.
func TestAliasBomb(t *testing.T) {
	const n = 300
	refs := func(anchor string) string {
		return "[" + strings.Repeat("*"+anchor+", ", n-1) + "*" + anchor + "]"
	}
	src := "version: 1\nx: &s kafka:9092\n" +
		"y: &c {name: k, kind: kafka, bootstrap: " + refs("s") + "}\n" +
		"z: &r {name: r, clusters: " + refs("c") + "}\n" +
		"regions: " + refs("r") + "\n"
	_, errs := parse("bomb.yaml", []byte(src), lookupTestEnv)
	checkErrors(t, errs)
	found := false
	for _, e := range errs {
		found = found || strings.Contains(e.Reason, "file too complex")
	}
	if !found {
		t.Errorf("no \"file too complex\" error in:\n%v", errs)
	}
}

func TestLoadResolvesTLSPathsAgainstTheFile(t *testing.T) {
	dir := t.TempDir()
	data, err := os.ReadFile("../examples/two-region.yaml")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "topology.yaml")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range f.Regions {
		for _, g := range r.Gateways {
			for _, p := range []string{g.TLS.CAFile, g.TLS.CertFile, g.TLS.KeyFile} {
				if !strings.HasPrefix(p, dir+string(filepath.Separator)) {
					t.Errorf("gateway %s: tls path %q not resolved against %s", g.Name, p, dir)
				}
			}
		}
	}
}

func TestSecretNeverPrints(t *testing.T) {
	s := Secret("p4ssw0rd-value")
	type holder struct {
		S SASL
		P *SASL
	}
	h := holder{S: SASL{Username: "u", Password: s}, P: &SASL{Password: s}}
	outs := []string{
		fmt.Sprint(s), fmt.Sprintf("%v %s %q %x %d %+v %#v", s, s, s, s, s, h, h), fmt.Sprintf("%+v %#v", *h.P, h.P),
	}
	j, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	y, err := yaml.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	var lb bytes.Buffer
	slog.New(slog.NewJSONHandler(&lb, nil)).Info("x", "pw", s, "sasl", h.S)
	slog.New(slog.NewTextHandler(&lb, nil)).Info("x", "pw", s)
	outs = append(outs, string(j), string(y), lb.String())
	for _, o := range outs {
		if strings.Contains(o, "p4ssw0rd") {
			t.Errorf("secret printed: %s", o)
		}
	}
	if s.Reveal() != "p4ssw0rd-value" {
		t.Errorf("Reveal = %q", s.Reveal())
	}
}

func TestEnvValuesRedactedInErrors(t *testing.T) {
	src := "version: 1\nregions:\n  - name: a\n    clusters:\n      - name: k\n        kind: kafka\n        bootstrap: [\"${SECRET_BOOT}\"]\n" +
		"        sasl: {mechanism: \"${SECRET_MECH}\", username: u, password: \"${SECRET_PW}\"}\n"
	env := map[string]string{"SECRET_BOOT": "boot-s3cret:x", "SECRET_MECH": "mech-s3cret", "SECRET_PW": "pw-s3cret"}
	_, errs := parse("t.yaml", []byte(src), func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if len(errs) == 0 {
		t.Fatal("no errors, want the bad bootstrap and mechanism reported")
	}
	msg := errs.Error()
	if strings.Contains(msg, "s3cret") {
		t.Errorf("errors print a value from the environment:\n%s", msg)
	}
	if !strings.Contains(msg, "bootstrap[0]") || !strings.Contains(msg, "sasl.mechanism") || !strings.Contains(msg, "[redacted]") {
		t.Errorf("errors should still name the settings and say [redacted]:\n%s", msg)
	}
}

func TestAdminForms(t *testing.T) {
	const head = "version: 1\nregions:\n  - name: a\n    clusters:\n      - {name: k, kind: kafka, bootstrap: [\"k:9092\"]}\n    gateways:\n      - name: g\n        listen: 127.0.0.1:7443\n"
	env := func(k string) (string, bool) {
		if k == "TOK" {
			return "0123456789abcdef-token", true
		}
		return "", false
	}
	tests := []struct {
		name, admin string
		want        Admin
		warn        string // the warning expected; "" = none
	}{
		{"shorthand", "admin: 127.0.0.1:9180", Admin{Listen: "127.0.0.1:9180"}, ""},
		{"shorthand on all interfaces", "admin: 0.0.0.0:9180", Admin{Listen: "0.0.0.0:9180"}, "without authentication"},
		{"mapping without auth", "admin: {listen: \":9180\"}", Admin{Listen: ":9180"}, "without authentication"},
		{"token over plain HTTP", "admin: {listen: \":9180\", token: \"${TOK}\", open: [healthz], hosts: [gw.example]}",
			Admin{Listen: ":9180", Token: "0123456789abcdef-token", Open: []string{"healthz"}, Hosts: []string{"gw.example"}}, "clear text"},
		{"token on loopback", "admin: {listen: \"127.0.0.1:9180\", token: \"${TOK}\"}",
			Admin{Listen: "127.0.0.1:9180", Token: "0123456789abcdef-token"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, errs := parse("t.yaml", []byte(head+"        "+tt.admin+"\n"), env)
			if len(errs) > 0 {
				t.Fatalf("errors: %v", errs)
			}
			got := f.Regions[0].Gateways[0].Admin
			if got == nil || !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("admin = %+v, want %+v", got, tt.want)
			}
			ws := f.Warnings().Error()
			if tt.warn == "" && ws != "" || !strings.Contains(ws, tt.warn) {
				t.Errorf("warnings = %q, want %q", ws, tt.warn)
			}
			if tt.want.Token != "" && !slices.Contains(f.Secrets(), tt.want.Token.Reveal()) {
				t.Errorf("Secrets() = %d values, want the token among them", len(f.Secrets()))
			}
		})
	}
}

// TestUnsetEnvWarns: with Options.UnsetEnvWarns an unset ${NAME} is a
// warning at its value, the value stands for itself, and the same file
// without the option fails there.
func TestUnsetEnvWarns(t *testing.T) {
	data := []byte(`version: 1
regions:
  - name: east
    clusters:
      - name: kafka
        kind: kafka
        bootstrap: [kafka-1.east:9092]
        sasl: {mechanism: plain, username: meridian, password: "${MERIDIAN_TEST_NOT_SET}"}
    gateways: [{name: east-a, listen: "127.0.0.1:7443"}]
`)
	none := func(string) (string, bool) { return "", false }
	if _, errs := parse("t.yaml", data, none); len(errs) != 1 || !strings.Contains(errs[0].Error(), "t.yaml:8:64: regions[0].clusters[0].sasl.password: environment variable MERIDIAN_TEST_NOT_SET is not set") {
		t.Fatalf("without the option: %v", errs)
	}
	f, errs := parseWith("t.yaml", data, none, Options{UnsetEnvWarns: true})
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	ws := f.Warnings()
	if len(ws) != 1 || ws[0].Line != 8 || ws[0].Col != 64 || ws[0].Path != "regions[0].clusters[0].sasl.password" || !strings.Contains(ws[0].Reason, "MERIDIAN_TEST_NOT_SET is not set") {
		t.Fatalf("warnings %v", ws)
	}
	if got := f.Regions[0].Clusters[0].SASL.Password.Reveal(); got != "${MERIDIAN_TEST_NOT_SET}" {
		t.Errorf("the unset value is %q, want the text ${MERIDIAN_TEST_NOT_SET}", got)
	}
}
