package gateway_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/config"
	"github.com/meridian-gw/meridian/internal/gateway"
	"github.com/meridian-gw/meridian/internal/kread"
	"github.com/meridian-gw/meridian/internal/pki"
	"github.com/meridian-gw/meridian/topology"
)

// reloadPair is a sending gateway (hq-a) and a receiving one (dc-a) run
// from a topology file that the test rewrites and reloads.
type reloadPair struct {
	t             *testing.T
	src, dst, drK *kfake.Cluster
	file          string
	hqAddr        string
	dcAddr        string
	drAddr        string
	hq, dc, dr    *gateway.Gateway // dr: a second receiver, in region dr
	routeC        string           // "" = routeC
}

// write writes the gateways' file with dc-a's listen address and the
// given routes (YAML flow mappings), then routeC.
func (p *reloadPair) write(dcListen string, routes ...string) {
	p.t.Helper()
	y := fmt.Sprintf(`version: 1
regions:
  - name: hq
    clusters: [{name: kafka, kind: kafka, bootstrap: [%q]}]
    gateways: [{name: hq-a, listen: %q, tls: {ca_file: ca.crt, cert_file: hq-a.crt, key_file: hq-a.key}}]
  - name: dc
    clusters: [{name: kafka, kind: kafka, bootstrap: [%q]}]
    gateways: [{name: dc-a, listen: %q, tls: {ca_file: ca.crt, cert_file: dc-a.crt, key_file: dc-a.key}}]
  - name: dr
    clusters: [{name: kafka, kind: kafka, bootstrap: [%q]}]
    gateways: [{name: dr-a, listen: %q, tls: {ca_file: ca.crt, cert_file: dr-a.crt, key_file: dr-a.key}}]
links:
  - {between: [hq, dc], dial: hq, profile: lan}
  - {between: [hq, dr], dial: hq, profile: lan}
routes:
`, p.src.ListenAddrs()[0], p.hqAddr, p.dst.ListenAddrs()[0], dcListen, p.drK.ListenAddrs()[0], p.drAddr)
	c := routeC
	if p.routeC != "" {
		c = p.routeC
	}
	for _, r := range append(routes, c) {
		y += "  - " + r + "\n"
	}
	if err := os.WriteFile(p.file, []byte(y), 0o600); err != nil {
		p.t.Fatal(err)
	}
}

const (
	routeA = `{name: a, from: hq/kafka, to: [dc/kafka], topics: {include: ['^a\.']}, discover: 200ms}`
	// routeC is always there: dr-a receives from the start (a gateway
	// that accepted no sessions at start refuses a reload that would).
	routeC = `{name: c, from: hq/kafka, to: [dr/kafka], topics: {include: ['^c\.']}, discover: 200ms}`
	routeB = `{name: b, from: hq/kafka, to: [dr/kafka], topics: {include: ['^b\.']}, discover: 200ms}`
)

func freeUDP(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().String()
}

// startReloadPair starts both gateways on route A alone.
func startReloadPair(t *testing.T, topics ...string) *reloadPair {
	src, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, topics...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	dst, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dst.Close)
	drK, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(drK.Close)
	p := &reloadPair{t: t, src: src, dst: dst, drK: drK, file: filepath.Join(t.TempDir(), "topology.yaml"),
		hqAddr: freeUDP(t), dcAddr: freeUDP(t), drAddr: freeUDP(t)}
	p.write(p.dcAddr, routeA)
	f, err := config.Load(p.file)
	if err != nil {
		t.Fatal(err)
	}
	topo, err := topology.New(f)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	run := func(name string) *gateway.Gateway {
		c, err := ca.Issue(name, []string{"localhost", "127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		g, err := gateway.New(gateway.Options{Topology: topo, Name: name, ServerTLS: ca.ServerConfig(c), ClientTLS: ca.ClientConfig(c, ""),
			AdminAddr: "-", Logger: testLogger(t).With("gw", name), MaxBatchBytes: 64 << 10, Window: 1 << 20,
			Reload: gateway.ReloadFrom(p.file, nil)})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); g.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		return g
	}
	p.dc = run("dc-a")
	p.dr = run("dr-a")
	p.hq = run("hq-a")
	return p
}

// reload reloads gateways in order and checks each outcome.
func (p *reloadPair) reload(want string, gws ...*gateway.Gateway) []*gateway.ReloadResult {
	p.t.Helper()
	var out []*gateway.ReloadResult
	for _, g := range gws {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		res := g.Reload(ctx)
		cancel()
		name := g.Status().Gateway
		if res.Outcome != want {
			p.t.Fatalf("reload of %s: %v, want %s", name, res, want)
		}
		p.t.Logf("reload of %s: %v (engine restarted %v, peers restarted %v)", name, res, res.EngineRestarted, res.RestartedPeers)
		out = append(out, res)
	}
	return out
}

// producer writes numbered records to topics until stopped, and counts them.
type producer struct {
	n    atomic.Int64
	stop func()
}

func startProducer(t *testing.T, c *kfake.Cluster, topics ...string) *producer {
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ProducerLinger(2*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	p := &producer{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		defer cl.Close()
		for i := 0; ctx.Err() == nil; i += 20 {
			var recs []*kgo.Record
			for j := i; j < i+20; j++ {
				recs = append(recs, &kgo.Record{Topic: topics[j%len(topics)], Key: []byte("k" + strconv.Itoa(j%13)), Value: fmt.Appendf(nil, `{"seq":%d}`, j)})
			}
			if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
				t.Errorf("produce: %v", err)
				return
			}
			p.n.Add(int64(len(recs)))
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
	p.stop = func() { cancel(); wg.Wait() }
	t.Cleanup(p.stop)
	return p
}

// count is how many records dst holds in topic (0 if it has none yet).
func count(t *testing.T, c *kfake.Cluster, topic string, where func(*kgo.Record) bool) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n := 0
	err := kread.Each(ctx, []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, []string{topic}, func(r *kgo.Record) {
		if where == nil || where(r) {
			n++
		}
	})
	if err != nil && !strings.Contains(err.Error(), "UNKNOWN_TOPIC") && !strings.Contains(err.Error(), "unknown topic") {
		t.Logf("read %s: %v", topic, err)
	}
	return n
}

func waitCount(t *testing.T, c *kfake.Cluster, topic string, want int, where func(*kgo.Record) bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		n := count(t, c, topic, where)
		if n >= want {
			if n > want {
				t.Fatalf("%s: %d records at the destination, want %d", topic, n, want)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d records at the destination after 15s, want %d", topic, n, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// outRecords is how many records hq-a has sent on leg a, as its status
// says (per sender: a restarted sender counts from 0).
func outRecords(t *testing.T, g *gateway.Gateway, leg string) int64 {
	t.Helper()
	for _, l := range g.Status().Legs {
		if l.Leg == leg && l.Direction == "out" {
			return l.Records
		}
	}
	t.Fatalf("%s sends no leg %s", g.Status().Gateway, leg)
	return 0
}

// TestReloadRoutes runs gateways mirroring route A (hq to dc) while
// reloads add route B (hq to dr), remove it, and give A a filter. A's
// records flow throughout and arrive exactly once (read back and compared
// per partition over the whole run); B's arrive while B is routed, and
// stop when it is not; the filter applies to what is produced after it.
// Adding and removing B restarts hq-a's sender to dr-a alone: its sender
// to dc-a keeps running.
func TestReloadRoutes(t *testing.T) {
	p := startReloadPair(t, "a.0", "a.1", "b.0", "a.f", "c.0", "d.0")
	a := startProducer(t, p.src, "a.0", "a.1")
	waitTopics(t, p.src, p.dst, []string{"a.0", "a.1"}, 200, 15*time.Second)

	// Add route B: the receiver first, then the sender.
	p.write(p.dcAddr, routeA, routeB)
	res := p.reload(gateway.ReloadApplied, p.dr, p.hq)
	if got := strings.Join(res[0].Added, ","); got != "in b:dr/kafka" || res[0].EngineRestarted {
		t.Errorf("dr-a added %q, engine restarted %v; want in b:dr/kafka started alone", got, res[0].EngineRestarted)
	}
	if got := strings.Join(res[1].Added, ","); got != "out b:dr/kafka" || res[1].EngineRestarted || fmt.Sprint(res[1].RestartedPeers) != "[dr-a]" {
		t.Errorf("hq-a: added %q, engine restarted %v, peers restarted %v; want out b:dr/kafka by restarting the sender to dr-a alone",
			got, res[1].EngineRestarted, res[1].RestartedPeers)
	}
	sentA := outRecords(t, p.hq, "a:dc/kafka")
	p.reload(gateway.ReloadUnchanged, p.dc) // B is not dc-a's
	produceTopics(t, p.src, []string{"b.0"}, 300, 0)
	checkTopics(t, "route b after it was added", waitTopics(t, p.src, p.drK, []string{"b.0"}, 300, 15*time.Second), 300)
	if now := outRecords(t, p.hq, "a:dc/kafka"); now < sentA || sentA == 0 {
		t.Errorf("hq-a's sender to dc-a counted %d records before route b's reload and %d after: it was restarted", sentA, now)
	}

	// Remove it, the sender first: b.0 stops at what it had.
	p.write(p.dcAddr, routeA)
	res = p.reload(gateway.ReloadApplied, p.hq, p.dr)
	if got := strings.Join(res[0].Removed, ","); got != "out b:dr/kafka" || fmt.Sprint(res[0].RestartedPeers) != "[dr-a]" {
		t.Errorf("hq-a removed %q restarting %v, want out b:dr/kafka restarting dr-a", got, res[0].RestartedPeers)
	}
	if got := strings.Join(res[1].Removed, ","); got != "in b:dr/kafka" || res[1].EngineRestarted {
		t.Errorf("dr-a removed %q, engine restarted %v; want in b:dr/kafka stopped alone", got, res[1].EngineRestarted)
	}
	produceTopics(t, p.src, []string{"b.0"}, 100, 300)

	// A reload of the same file changes nothing and restarts nothing.
	p.reload(gateway.ReloadUnchanged, p.dc, p.dr, p.hq)

	// Give A a filter; records of a.f produced before it all arrive,
	// after it only those it keeps.
	produceTopics(t, p.src, []string{"a.f"}, 50, 0)
	waitCount(t, p.dst, "a.f", 50, nil)
	p.write(p.dcAddr, strings.Replace(routeA, "discover: 200ms", `discover: 200ms, filter: 'int(value.seq) % 2 == 0'`, 1))
	res = p.reload(gateway.ReloadApplied, p.dc, p.hq)
	if got := strings.Join(res[0].Changed, ","); got != "in a:dc/kafka" || res[0].EngineRestarted {
		// The filter is the sender's: dc-a keeps leg a running.
		t.Errorf("dc-a changed %q, engine restarted %v; want in a:dc/kafka, live", got, res[0].EngineRestarted)
	}
	for _, l := range p.dc.Status().Legs {
		if l.Leg == "a:dc/kafka" && l.Filter != "int(value.seq) % 2 == 0" {
			t.Errorf("dc-a status of leg a: filter %q, want the new one", l.Filter)
		}
	}
	if got := strings.Join(res[1].Changed, ","); got != "out a:dc/kafka" {
		t.Errorf("hq-a changed %q, want out a:dc/kafka", got)
	}
	produceTopics(t, p.src, []string{"a.f"}, 100, 50) // seq 50..149: 50 even
	waitCount(t, p.dst, "a.f", 100, nil)
	if n := count(t, p.drK, "b.0", nil); n != 300 {
		t.Errorf("b.0 at dr: %d records, want the 300 produced while route b existed", n)
	}

	// Route c gains topics on dr-a while hq-a's session carries it: dr-a
	// cannot swap the leg under the session and restarts its engine; then
	// hq-a restarts its sender to dr-a. c's records keep arriving, d's
	// start to.
	produceTopics(t, p.src, []string{"c.0"}, 100, 0)
	waitCount(t, p.drK, "c.0", 100, nil)
	p.routeC = strings.Replace(routeC, `'^c\.'`, `'^c\.', '^d\.'`, 1)
	p.write(p.dcAddr, strings.Replace(routeA, "discover: 200ms", `discover: 200ms, filter: 'int(value.seq) % 2 == 0'`, 1))
	res = p.reload(gateway.ReloadApplied, p.dr, p.hq)
	if !res[0].EngineRestarted || fmt.Sprint(res[1].RestartedPeers) != "[dr-a]" {
		t.Errorf("route c changed: dr-a engine restarted %v, hq-a restarted %v; want dr-a's engine restarted, hq-a's sender to dr-a",
			res[0].EngineRestarted, res[1].RestartedPeers)
	}
	produceTopics(t, p.src, []string{"c.0", "d.0"}, 100, 100)
	waitCount(t, p.drK, "c.0", 150, nil)
	waitCount(t, p.drK, "d.0", 50, nil)

	// A ran throughout: every record it keeps exactly once and in order
	// per partition, read back over the whole run (after the filter,
	// records of odd seq are filtered, not lost).
	a.stop()
	t.Logf("route a: %d records produced over the run", a.n.Load())
	checkFiltered(t, p, []string{"a.0", "a.1"})
}

// checkFiltered waits until A's topics at the destination hold each
// source record of even seq, with no duplicate and in source order.
func checkFiltered(t *testing.T, p *reloadPair, topics []string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		lost, dup, reord, total, err := compareSubsequence(p, topics)
		if err == nil && lost == 0 && dup == 0 && reord == 0 || time.Now().After(deadline) {
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("route a over the run: %d records at the destination, lost=%d duplicated=%d reordered=%d", total, lost, dup, reord)
			if lost+dup+reord != 0 {
				t.Fatalf("route a: lost=%d duplicated=%d reordered=%d", lost, dup, reord)
			}
			return
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// compareSubsequence reads topics at the source and destination and
// counts, per partition: source records of even seq (which every filter
// of the run keeps) missing at the destination, destination duplicates,
// and destination records out of source order or not from the source.
func compareSubsequence(p *reloadPair, topics []string) (lost, dup, reord, total int, err error) {
	type key struct {
		topic string
		part  int32
	}
	read := func(c *kfake.Cluster) (map[key][]string, error) {
		out := map[key][]string{}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := kread.Each(ctx, []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, topics, func(r *kgo.Record) {
			k := key{r.Topic, r.Partition}
			out[k] = append(out[k], string(r.Value))
		})
		return out, err
	}
	src, err := read(p.src)
	if err != nil {
		return 0, 0, 0, 0, err
	}
	dst, err := read(p.dst)
	if err != nil {
		return 0, 0, 0, 0, err
	}
	for k, svals := range src {
		pos := map[string]int{}
		for i, v := range svals {
			pos[v] = i
		}
		seen := map[string]bool{}
		last := -1
		for _, v := range dst[k] {
			total++
			if seen[v] {
				dup++
			}
			seen[v] = true
			if i, ok := pos[v]; !ok || i < last {
				reord++
			} else {
				last = i
			}
		}
		for _, v := range svals {
			var seq int
			if _, err := fmt.Sscanf(v, `{"seq":%d}`, &seq); err != nil {
				return 0, 0, 0, 0, fmt.Errorf("source value %q: %w", v, err)
			}
			if !seen[v] && seq%2 == 0 {
				lost++
			}
		}
	}
	return lost, dup, reord, total, nil
}

// TestReloadRefused: a reload that changes the receiving gateway's listen
// address is refused naming the setting, a file with a syntax error or an
// invalid setting is refused with its position, and mirroring continues
// through all of them; the reload metrics show each outcome.
func TestReloadRefused(t *testing.T) {
	p := startReloadPair(t, "a.0")
	produceTopics(t, p.src, []string{"a.0"}, 200, 0)
	waitCount(t, p.dst, "a.0", 200, nil)
	okAt := metricValue(t, p.dc, "meridian_config_last_reload_success_timestamp_seconds")

	p.write(freeUDP(t), routeA)
	res := p.dc.Reload(context.Background())
	if res.Outcome != gateway.ReloadRefused || len(res.Problems) != 1 || // advertise follows listen: one problem
		!strings.Contains(res.Problems[0], "topology.yaml:") || !strings.Contains(res.Problems[0], "regions[1].gateways[0].listen: cannot change while the gateway runs") {
		t.Fatalf("listen change: %v, want refused at regions[1].gateways[0].listen", res)
	}
	if v := metricValue(t, p.dc, "meridian_config_last_reload_successful"); v != 0 {
		t.Errorf("last_reload_successful = %v after a refusal, want 0", v)
	}
	produceTopics(t, p.src, []string{"a.0"}, 100, 200)
	waitCount(t, p.dst, "a.0", 300, nil)

	// A syntax error, then a validation error: refused with the position.
	if err := os.WriteFile(p.file, []byte("version: 1\nregions: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	res = p.dc.Reload(context.Background())
	if res.Outcome != gateway.ReloadInvalid || len(res.Problems) == 0 || !strings.Contains(res.Problems[0], "topology.yaml:") {
		t.Fatalf("syntax error: %v, want invalid with topology.yaml:line:col", res)
	}
	p.write(p.dcAddr, strings.Replace(routeA, "from: hq/kafka", "from: hq/kafka-x", 1))
	res = p.hq.Reload(context.Background())
	if res.Outcome != gateway.ReloadInvalid || len(res.Problems) == 0 ||
		!strings.Contains(res.Problems[0], "topology.yaml:") || !strings.Contains(res.Problems[0], "routes[0].from") {
		t.Fatalf("unknown cluster: %v, want invalid at routes[0].from", res)
	}
	t.Logf("refused: %v", res)
	produceTopics(t, p.src, []string{"a.0"}, 100, 300)
	checkTopics(t, "route a through refused reloads", waitTopics(t, p.src, p.dst, []string{"a.0"}, 400, 15*time.Second), 400)
	if st := p.hq.Status(); len(st.Legs) != 2 || st.Legs[0].Leg != "a:dc/kafka" || st.Legs[1].Leg != "c:dr/kafka" {
		t.Errorf("hq-a legs after refused reloads: %+v, want a:dc/kafka and c:dr/kafka", st.Legs)
	}

	// The good file again: unchanged, and the gauges say so.
	p.write(p.dcAddr, routeA)
	if res := p.dc.Reload(context.Background()); res.Outcome != gateway.ReloadUnchanged {
		t.Fatalf("original file: %v, want unchanged", res)
	}
	if v := metricValue(t, p.dc, "meridian_config_last_reload_successful"); v != 1 {
		t.Errorf("last_reload_successful = %v after an unchanged reload, want 1", v)
	}
	if v := metricValue(t, p.dc, "meridian_config_last_reload_success_timestamp_seconds"); v <= okAt {
		t.Errorf("last_reload_success_timestamp_seconds = %v, want after the start (%v)", v, okAt)
	}
	mfs, err := p.dc.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() == "meridian_config_reloads_total" {
			for _, m := range mf.GetMetric() {
				got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
			}
		}
	}
	if want := map[string]float64{"applied": 0, "unchanged": 1, "refused": 1, "invalid": 1}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("dc-a meridian_config_reloads_total = %v, want %v", got, want)
	}
}

// metricValue is the value of the gateway's unlabelled metric name.
func metricValue(t *testing.T, g *gateway.Gateway, name string) float64 {
	t.Helper()
	mfs, err := g.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
