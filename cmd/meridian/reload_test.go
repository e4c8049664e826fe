package main

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestReloadCommand runs two gateways as `meridian run` children and
// reloads them: `meridian reload` prints a refusal of a listen change
// (exit 1), SIGHUP with a broken file is refused and shows in /status and
// /metrics, and `meridian reload` applies a route's new filter (exit 0,
// the leg named); mirroring stays exact through all of it.
func TestReloadCommand(t *testing.T) {
	src, dst := twoClusters(t)
	srcOpts := []kgo.Opt{kgo.SeedBrokers(src.ListenAddrs()...)}
	dstOpts := []kgo.Opt{kgo.SeedBrokers(dst.ListenAddrs()...)}
	dir := t.TempDir()
	p := topoParams{
		SrcBootstrap: strings.Join(src.ListenAddrs(), ", "),
		DstBootstrap: strings.Join(dst.ListenAddrs(), ", "),
		EastListen:   freeUDPAddr(t), WestListen: freeUDPAddr(t),
		EastAdmin: freeTCPAddr(t), WestAdmin: freeTCPAddr(t),
	}
	topo := writeTopology(t, dir, p)
	if r := meridian(t, dir, nil, "certs", "--out", "certs", "-f", topo); r.code != 0 {
		t.Fatalf("meridian certs: %v", r)
	}
	startChild(t, "west-gw", dir, "run", "-f", topo, "--gateway", "west-gw")
	east := startChild(t, "east-gw", dir, "run", "-f", topo, "--gateway", "east-gw")
	cl := mustClient(t, append(slices.Clone(srcOpts), kgo.ProducerLinger(2*time.Millisecond)))
	gen := &recordGen{base: time.UnixMilli(1_700_000_000_000)}
	if err := gen.produce(t.Context(), cl, 200, 100, 0); err != nil {
		t.Fatal(err)
	}
	waitMirrored(t, srcOpts, dstOpts, gen.mirrored.Load(), 30*time.Second)

	// West's listen address changes: refused, named.
	moved := p
	moved.WestListen = freeUDPAddr(t)
	writeTopology(t, dir, moved)
	r := meridian(t, dir, nil, "reload", "--admin", p.WestAdmin)
	if r.code != 1 || !strings.Contains(r.stdout, "refused") || !strings.Contains(r.stdout, "regions[1].gateways[0].listen: cannot change while the gateway runs") {
		t.Errorf("reload of a listen change: %v\nwant exit 1, refused at regions[1].gateways[0].listen", r)
	}

	// SIGHUP with a broken file: refused with the position.
	writeTopology(t, dir, p)
	broken := strings.Replace(readFile(t, topo), "from: east/kafka", "from: east/kafka-x", 1)
	writeFile(t, topo, broken)
	east.signal(t, syscall.SIGHUP)
	var st struct {
		Reload struct {
			Outcome  string
			Problems []string
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for st.Reload.Outcome == "" && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		if code, body, err := httpGet(p.EastAdmin, "/status"); err == nil && code == 200 {
			_ = json.Unmarshal([]byte(body), &st)
		}
	}
	if st.Reload.Outcome != "invalid" || len(st.Reload.Problems) == 0 || !strings.Contains(st.Reload.Problems[0], "topology.yaml:") ||
		!strings.Contains(st.Reload.Problems[0], "routes[0].from") {
		t.Errorf("east /status reload after SIGHUP with a broken file: %+v, want invalid at topology.yaml:L:C: routes[0].from", st.Reload)
	}
	if _, body, err := httpGet(p.EastAdmin, "/metrics"); err != nil || !strings.Contains(body, "\nmeridian_config_last_reload_successful 0\n") {
		t.Errorf("east /metrics after a broken reload (err %v): want meridian_config_last_reload_successful 0", err)
	}
	if err := gen.produce(t.Context(), cl, 200, 100, 0); err != nil {
		t.Fatal(err)
	}
	waitMirrored(t, srcOpts, dstOpts, gen.mirrored.Load(), 30*time.Second)

	// A filter that keeps everything: the leg changes on both sides and
	// mirroring stays exact across the engines' restart.
	filtered := p
	filtered.Filter = "true"
	writeTopology(t, dir, filtered)
	for _, c := range []struct{ admin, leg, how string }{
		{p.WestAdmin, "in orders:west/kafka", "applied live"},
		{p.EastAdmin, "out orders:west/kafka", "restarted the senders to west-gw alone"},
	} {
		r := meridian(t, dir, nil, "reload", "--admin", c.admin)
		if r.code != 0 || !strings.Contains(r.stdout, "applied") || !strings.Contains(r.stdout, "changed  "+c.leg) || !strings.Contains(r.stdout, c.how) {
			t.Errorf("reload of a filter change via %s: %v\nwant exit 0, applied (%s), changed %s", c.admin, r, c.how, c.leg)
		}
	}
	if err := gen.produce(t.Context(), cl, 200, 100, 0); err != nil {
		t.Fatal(err)
	}
	waitMirrored(t, srcOpts, dstOpts, gen.mirrored.Load(), 30*time.Second)
	if _, body, err := httpGet(p.EastAdmin, "/metrics"); err != nil || !strings.Contains(body, "\nmeridian_config_last_reload_successful 1\n") {
		t.Errorf("east /metrics after an applied reload (err %v): want meridian_config_last_reload_successful 1", err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}
