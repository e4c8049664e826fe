package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/meridian-gw/meridian/internal/pki"
	"github.com/meridian-gw/meridian/topology/membership"
	"github.com/meridian-gw/meridian/topology/topologytest"
)

// freePort returns a port free for both UDP and TCP on 127.0.0.1.
func freePort(t *testing.T) int {
	t.Helper()
	for range 20 {
		u, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := u.LocalAddr().(*net.UDPAddr).Port
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		u.Close()
		if err == nil {
			l.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

func fastGossip(c *memberlist.Config) {
	c.ProbeInterval = 200 * time.Millisecond
	c.ProbeTimeout = 100 * time.Millisecond
	c.GossipInterval = 50 * time.Millisecond
	c.SuspicionMult = 2
	c.PushPullInterval = time.Second
	c.TCPTimeout = 2 * time.Second
}

// TestGatewayGossip runs three gateways in-process with gossip on
// loopback: hq-a and hq-b in region hq (also gossiping on a plain,
// encrypted port), v7-a on a ship that only dials out. All see each other
// alive with their regions and protocol versions; the region keyring is
// rotated through the admin action; hq-b stops and the others see it
// "left" (its leave is gossiped before it drains), and the metrics say so.
func TestGatewayGossip(t *testing.T) {
	key := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	t.Setenv("MERIDIAN_TEST_GOSSIP_KEY", key)
	port := map[string]int{}
	for _, n := range []string{"hq-a", "hq-b", "v7-a", "hq-a/r", "hq-b/r", "hq-a/l", "hq-b/l", "v7-a/l"} {
		port[n] = freePort(t)
	}
	gw := func(name string, region bool, dialOut bool) string {
		s := fmt.Sprintf("gossip: {listen: \"127.0.0.1:%d\"", port[name])
		if region {
			s += fmt.Sprintf(", region: \"127.0.0.1:%d\"", port[name+"/r"])
		}
		if dialOut {
			s += ", dial_out: true"
		}
		return fmt.Sprintf("listen: \"127.0.0.1:%d\", ", port[name+"/l"]) + s + "}"
	}
	yaml := fmt.Sprintf(`version: 1
gossip: {keys: ["${MERIDIAN_TEST_GOSSIP_KEY}"]}
regions:
  - name: hq
    clusters: [{name: kafka, kind: kafka, bootstrap: ["127.0.0.1:1"]}]
    gateways:
      - {name: hq-a, tls: {ca_file: ca.crt, cert_file: a.crt, key_file: a.key}, %s}
      - {name: hq-b, tls: {ca_file: ca.crt, cert_file: b.crt, key_file: b.key}, %s}
  - name: vessel-7
    clusters: [{name: kafka, kind: kafka, bootstrap: ["127.0.0.1:2"]}]
    gateways:
      - {name: v7-a, tls: {ca_file: ca.crt, cert_file: v.crt, key_file: v.key}, %s}
links:
  - {between: [vessel-7, hq], profile: geo-satellite}
`, gw("hq-a", true, false), gw("hq-b", true, false), gw("v7-a", false, true))
	topo := topologytest.Parse(t, yaml)
	ca, err := pki.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	gws := map[string]*Gateway{}
	stops := map[string]func(){}
	stop := func(name string, cancel func(), done chan error) {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s Run: %v", name, err)
			}
		case <-time.After(20 * time.Second):
			buf := make([]byte, 1<<20)
			t.Errorf("%s did not stop:\n%s", name, buf[:runtime.Stack(buf, true)])
		}
	}
	for _, name := range []string{"hq-a", "hq-b", "v7-a"} {
		c, err := ca.Issue(name, []string{"localhost", "127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		g, err := New(Options{Topology: topo, Name: name, ServerTLS: ca.ServerConfig(c), ClientTLS: ca.ClientConfig(c, ""),
			AdminAddr: "-", GossipConfig: fastGossip})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- g.Run(ctx) }()
		var once sync.Once
		stops[name] = func() { once.Do(func() { stop(name, cancel, done) }) }
		t.Cleanup(stops[name])
		gws[name] = g
	}
	state := func(g *Gateway, pool, name string) (MemberJSON, bool) {
		for _, m := range g.membersJSON().(MembersJSON).Members {
			if m.Name == name && m.Pool == pool {
				return m, true
			}
		}
		return MemberJSON{}, false
	}
	wait := func(g *Gateway, pool, name, want string) MemberJSON {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			m, ok := state(g, pool, name)
			if ok && m.State == want {
				return m
			}
			if time.Now().After(deadline) {
				b, _ := json.MarshalIndent(g.membersJSON(), "", "  ")
				t.Fatalf("%s sees %s/%s as %q, want %q:\n%s", g.table.Gateway.Name, pool, name, m.State, want, b)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for _, g := range gws {
		for _, n := range []string{"hq-a", "hq-b", "v7-a"} {
			wait(g, "fleet", n, "alive")
		}
	}
	wait(gws["hq-a"], "region", "hq-b", "alive")
	wait(gws["hq-b"], "region", "hq-a", "alive")
	if m, _ := state(gws["hq-a"], "fleet", "v7-a"); m.Region != "vessel-7" || m.ProtoMax == 0 || !strings.Contains(m.Caps, "dial-out") || m.Reach != "direct" || !m.Compatible {
		t.Errorf("hq-a sees v7-a as %+v", m)
	}
	if _, ok := state(gws["v7-a"], "region", "hq-a"); ok {
		t.Error("v7-a is in hq's region pool")
	}

	// Rotate the region key through the admin action, on both gateways.
	newKey := bytes.Repeat([]byte{9}, 16)
	keysOp := func(g *Gateway, body string) map[string]any {
		t.Helper()
		rec := httptest.NewRecorder()
		g.serveGossipKeys(rec, httptest.NewRequest(http.MethodPost, "/v1/gossip/keys", strings.NewReader(body)))
		var out map[string]any
		_ = json.Unmarshal(rec.Body.Bytes(), &out)
		if rec.Code != http.StatusOK {
			t.Fatalf("%s %s: %d %v", g.table.Gateway.Name, body, rec.Code, out)
		}
		return out
	}
	oldFP := keysOp(gws["hq-a"], `{"op":"list"}`)["keys"].([]any)[0].(map[string]any)["fingerprint"].(string)
	newFP := fmt.Sprintf("%x", sha8(newKey))
	for _, body := range []string{
		`{"op":"install","key":"` + base64.StdEncoding.EncodeToString(newKey) + `"}`,
		`{"op":"use","fingerprint":"` + newFP + `"}`,
		`{"op":"remove","fingerprint":"` + oldFP + `"}`,
	} {
		for _, n := range []string{"hq-a", "hq-b"} {
			keysOp(gws[n], body)
		}
		time.Sleep(500 * time.Millisecond)
		wait(gws["hq-a"], "region", "hq-b", "alive")
	}
	if ks := keysOp(gws["hq-b"], `{"op":"list"}`)["keys"].([]any); len(ks) != 1 || ks[0].(map[string]any)["fingerprint"] != newFP {
		t.Errorf("hq-b keys after rotation: %v", ks)
	}
	if strings.Contains(fmt.Sprint(keysOp(gws["hq-a"], `{"op":"list"}`)), base64.StdEncoding.EncodeToString(newKey)) {
		t.Error("the key list shows a key")
	}

	// hq-b stops: left, not dead, everywhere.
	stops["hq-b"]()
	wait(gws["hq-a"], "fleet", "hq-b", "left")
	wait(gws["v7-a"], "fleet", "hq-b", "left")
	wait(gws["hq-a"], "region", "hq-b", "left")

	mfs, err := gws["hq-a"].Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, mf := range mfs {
		found[mf.GetName()] = true
		if mf.GetName() == "meridian_gossip_members" {
			for _, m := range mf.GetMetric() {
				l := map[string]string{}
				for _, lp := range m.GetLabel() {
					l[lp.GetName()] = lp.GetValue()
				}
				if l["pool"] == "fleet" && l["state"] == "left" && m.GetGauge().GetValue() != 1 {
					t.Errorf("fleet members left = %v, want 1", m.GetGauge().GetValue())
				}
			}
		}
	}
	for _, n := range []string{"meridian_gossip_members", "meridian_gossip_bytes_sent_total", "meridian_gossip_bytes_received_total", "meridian_gossip_suspicions_total", "meridian_gossip_probe_rtt_seconds"} {
		if !found[n] {
			t.Errorf("metric %s missing", n)
		}
	}
}

func sha8(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:8]
}

// A health report goes out when something an operator would see changed:
// a leg up or down, added, or on another peer, or its round trip, goodput
// or backlog off by more than half (above a floor); not for noise.
func TestHealthChanged(t *testing.T) {
	base := []membership.LegHealth{{Leg: "a", Peer: "hq-a", Up: true, RTT: 600 * time.Millisecond, Goodput: 1_000_000, Backlog: 5000}}
	with := func(f func(*membership.LegHealth)) []membership.LegHealth {
		c := slices.Clone(base)
		f(&c[0])
		return c
	}
	for _, tc := range []struct {
		name string
		cur  []membership.LegHealth
		want bool
	}{
		{"same", with(func(*membership.LegHealth) {}), false},
		{"down", with(func(l *membership.LegHealth) { l.Up = false }), true},
		{"other peer", with(func(l *membership.LegHealth) { l.Peer = "hq-b" }), true},
		{"leg added", append(slices.Clone(base), membership.LegHealth{Leg: "b"}), true},
		{"rtt +10%", with(func(l *membership.LegHealth) { l.RTT = 660 * time.Millisecond }), false},
		{"rtt +40%", with(func(l *membership.LegHealth) { l.RTT = 840 * time.Millisecond }), false},
		{"rtt doubled", with(func(l *membership.LegHealth) { l.RTT = 1200 * time.Millisecond }), true},
		{"goodput -30%", with(func(l *membership.LegHealth) { l.Goodput = 700_000 }), false},
		{"goodput to a third", with(func(l *membership.LegHealth) { l.Goodput = 300_000 }), true},
		{"backlog tripled", with(func(l *membership.LegHealth) { l.Backlog = 15000 }), true},
		{"backlog small", with(func(l *membership.LegHealth) { l.Backlog = 5900 }), false},
	} {
		if got := healthChanged(base, tc.cur); got != tc.want {
			t.Errorf("%s: healthChanged = %v, want %v", tc.name, got, tc.want)
		}
	}
	if !healthChanged(base, nil) {
		t.Error("all legs gone: want a report")
	}
	quiet := []membership.LegHealth{{Leg: "a", Up: true, Goodput: 10_000}}
	if healthChanged(quiet, []membership.LegHealth{{Leg: "a", Up: true, Goodput: 100_000}}) {
		t.Error("goodput 10 -> 100 kbit/s (under the 128 kbit/s floor): want no report")
	}
}
