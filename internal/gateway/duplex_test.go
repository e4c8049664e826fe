package gateway_test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/internal/gateway"
	"github.com/meridian-gw/meridian/internal/pki"
	"github.com/meridian-gw/meridian/internal/verify"
	"github.com/meridian-gw/meridian/topology/topologytest"
)

// TestDuplexShipOverQUIC runs a ship gateway that has no link listen
// address (behind NAT, `dial: vessel-7`) and an HQ gateway over real QUIC
// with mutual TLS and a geo-satellite profile (so the session stripes),
// built from a topology file as `meridian run` builds them. HQ's config.*
// topics reach the ship and the ship's telemetry.* topics reach HQ, both
// over the session the ship dialled, exactly once by read-back of both
// clusters, across a restart of HQ's gateway.
func TestDuplexShipOverQUIC(t *testing.T) {
	hqKafka, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "config.a", "config.b"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hqKafka.Close)
	shipKafka, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "telemetry.a", "telemetry.b"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(shipKafka.Close)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hqAddr := pc.LocalAddr().String()
	pc.Close()
	topo := topologytest.Parse(t, fmt.Sprintf(`version: 1
regions:
  - name: hq
    clusters: [{name: kafka, kind: kafka, bootstrap: [%q]}]
    gateways: [{name: hq-a, listen: %q, tls: {ca_file: ca.crt, cert_file: hq-a.crt, key_file: hq-a.key}}]
  - name: vessel-7
    clusters: [{name: kafka, kind: kafka, bootstrap: [%q]}]
    gateways: [{name: v7-a, tls: {ca_file: ca.crt, cert_file: v7-a.crt, key_file: v7-a.key}}]
links:
  - {between: [vessel-7, hq], dial: vessel-7, profile: geo-satellite, rate_limit: 50Mbit, compression: zstd}
routes:
  - {name: cfg, from: hq/kafka, to: [vessel-7/kafka], topics: {include: ['^config\.']}, discover: 200ms}
  - {name: up, from: vessel-7/kafka, to: [hq/kafka], topics: {include: ['^telemetry\.']}, discover: 200ms}
`, hqKafka.ListenAddrs()[0], hqAddr, shipKafka.ListenAddrs()[0]))
	ca, err := pki.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	run := func(name string) (g *gateway.Gateway, stop func()) {
		c, err := ca.Issue(name, []string{"localhost", "127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		g, err = gateway.New(gateway.Options{Topology: topo, Name: name, ServerTLS: ca.ServerConfig(c), ClientTLS: ca.ClientConfig(c, ""),
			AdminAddr: "-", Logger: testLogger(t).With("gw", name), MaxBatchBytes: 64 << 10, Window: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); g.Run(ctx) }()
		var once sync.Once
		stop = func() { once.Do(func() { cancel(); <-done }) }
		t.Cleanup(stop)
		return g, stop
	}
	down := []string{"config.a", "config.b"}
	up := []string{"telemetry.a", "telemetry.b"}
	const per = 1500
	produceTopics(t, hqKafka, down, per, 0)
	produceTopics(t, shipKafka, up, per, 0)
	_, stopHQ := run("hq-a")
	ship, _ := run("v7-a")
	if ship.LinkAddr() != nil {
		t.Errorf("the ship listens on %v; it dials every link", ship.LinkAddr())
	}
	checkTopics(t, "HQ to ship", waitTopics(t, hqKafka, shipKafka, down, per, 30*time.Second), per)
	checkTopics(t, "ship to HQ", waitTopics(t, shipKafka, hqKafka, up, per, 30*time.Second), per)
	if st := ship.Status(); len(st.Peers) != 1 || st.Peers[0].DialledBy != "v7-a" || !st.Peers[0].Connected {
		t.Errorf("ship status peers = %+v, want hq-a connected, dialled by v7-a", st.Peers)
	}

	// HQ's gateway restarts mid-stream; the ship dials it again.
	produceTopics(t, hqKafka, down, per, per)
	produceTopics(t, shipKafka, up, per, per)
	stopHQ()
	produceTopics(t, hqKafka, down, per, 2*per)
	hq, _ := run("hq-a")
	checkTopics(t, "HQ to ship after an HQ restart", waitTopics(t, hqKafka, shipKafka, down, 3*per, 60*time.Second), 3*per)
	checkTopics(t, "ship to HQ after an HQ restart", waitTopics(t, shipKafka, hqKafka, up, 2*per, 60*time.Second), 2*per)
	if st := hq.Status(); len(st.Peers) != 1 || st.Peers[0].DialledBy != "v7-a" {
		t.Errorf("HQ status peers = %+v, want v7-a, dialled by v7-a", st.Peers)
	}
}

// produceTopics writes n records over topics, numbered from from.
func produceTopics(t *testing.T, c *kfake.Cluster, topics []string, n, from int) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for i := from; i < from+n; i++ {
		recs = append(recs, &kgo.Record{Topic: topics[i%len(topics)], Key: []byte("k" + strconv.Itoa(i%31)),
			Value: fmt.Appendf(nil, `{"seq":%d}`, i), Timestamp: time.UnixMilli(1_700_000_000_000 + int64(i))})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// waitTopics compares topics of src and dst by read-back until dst holds
// want records or within passes.
func waitTopics(t *testing.T, src, dst *kfake.Cluster, topics []string, want int, within time.Duration) *verify.Report {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		r, err := verify.Compare(ctx, []kgo.Opt{kgo.SeedBrokers(src.ListenAddrs()...)}, []kgo.Opt{kgo.SeedBrokers(dst.ListenAddrs()...)},
			topics, func(s string) string { return s })
		cancel()
		if err == nil && r.Mirrored+r.Duplicated+r.Unexpected >= int64(want) || time.Now().After(deadline) {
			if err != nil {
				t.Fatalf("read-back: %v", err)
			}
			return r
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func checkTopics(t *testing.T, what string, rep *verify.Report, produced int) {
	t.Helper()
	t.Logf("%s: %v", what, rep)
	if !rep.OK() || rep.Produced != int64(produced) || rep.Mirrored != int64(produced) {
		t.Fatalf("%s: mirror not exact: %v (want produced=mirrored=%d)\n%v", what, rep, produced, rep.Samples)
	}
}
