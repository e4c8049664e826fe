package membership_test

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/meridian-gw/meridian/internal/pki"
	"github.com/meridian-gw/meridian/topology/membership"
	"github.com/meridian-gw/meridian/transport/quic"
)

var (
	caOnce sync.Once
	testCA *pki.CA
	certs  = map[string]*pki.Cert{}
)

func cert(t *testing.T, name string) (*pki.CA, *pki.Cert) {
	t.Helper()
	caOnce.Do(func() {
		ca, err := pki.NewCA("test CA", time.Hour)
		if err != nil {
			panic(err)
		}
		testCA = ca
		for _, n := range []string{"hq-a", "hq-b", "v7-a", "intruder"} {
			c, err := ca.Issue(n, []string{"localhost", "127.0.0.1"})
			if err != nil {
				panic(err)
			}
			certs[n] = c
		}
	})
	return testCA, certs[name]
}

// fastConfig are timings for loopback tests: probe every 200 ms, suspect
// for about a second.
func fastConfig() *memberlist.Config {
	c := memberlist.DefaultLocalConfig()
	c.ProbeInterval = 200 * time.Millisecond
	c.ProbeTimeout = 100 * time.Millisecond
	c.GossipInterval = 50 * time.Millisecond
	c.SuspicionMult = 2
	c.PushPullInterval = time.Second
	c.TCPTimeout = 2 * time.Second
	return c
}

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("MEMBERSHIP_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

type quicMember struct {
	m  *membership.Member
	tr *quic.Gossip
}

var fleet = map[string]bool{"hq-a": true, "hq-b": true, "v7-a": true}

// startQUIC starts a member over QUIC gossip on loopback; seeds are
// "NAME/ADDR". dialOut members cannot be dialled (as behind NAT).
func startQUIC(t *testing.T, name, region string, seeds []string, dialOut map[string]bool) *quicMember {
	t.Helper()
	ca, c := cert(t, name)
	tr, err := quic.ListenGossip("127.0.0.1:0", quic.GossipOptions{
		ServerTLS: ca.ServerConfig(c), ClientTLS: ca.ClientConfig(c, ""),
		Member:   func(n string) bool { return fleet[n] },
		Dialable: func(n string) bool { return !dialOut[n] },
		Logger:   testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := fastConfig()
	cfg.AdvertiseAddr, cfg.AdvertisePort = "127.0.0.1", tr.Addr().Port
	m, err := membership.New(membership.Options{
		Name: name, Meta: membership.Meta{Region: region, Gateway: name, Incarnation: uint64(time.Now().UnixMilli()), ProtoMin: 1, ProtoMax: 4},
		Config: cfg, Transport: tr, Seeds: seeds, Rejoin: 300 * time.Millisecond, Logger: testLogger(t),
		Reach: func(n string) bool { return slicesContains(tr.Peers(), n) },
	})
	if err != nil {
		tr.Shutdown()
		t.Fatal(err)
	}
	m.Start()
	qm := &quicMember{m: m, tr: tr}
	t.Cleanup(func() { qm.m.Shutdown() })
	return qm
}

func slicesContains(s []string, x string) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}

func (q *quicMember) seed() string { return q.m.LocalName() + "/" + q.tr.Addr().String() }

func stateOf(m *membership.Member, name string) (membership.State, bool) {
	for _, in := range m.Members() {
		if in.Name == name {
			return in.State, true
		}
	}
	return 0, false
}

func waitState(t *testing.T, within time.Duration, m *membership.Member, name string, want ...membership.State) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		s, ok := stateOf(m, name)
		for _, w := range want {
			if ok && s == w {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s sees %s as %v (known %v) after %v, want %v\n%s", m.LocalName(), name, s, ok, within, want, dump(m))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func dump(m *membership.Member) string {
	var b strings.Builder
	for _, in := range m.Members() {
		fmt.Fprintf(&b, "  %s %s %s since %s reach %s\n", in.Name, in.Meta.Region, in.State, in.Since.Format("15:04:05.000"), in.Reach)
	}
	return b.String()
}

// TestQUICGossip: three members over QUIC with mTLS on loopback form a
// fleet, one of them a site that can only dial out (the others reach it
// over its connections). One leaves gracefully: the others see "left".
// One is killed: the others see it suspect, then dead.
func TestQUICGossip(t *testing.T) {
	dialOut := map[string]bool{"v7-a": true}
	hqa := startQUIC(t, "hq-a", "hq", nil, dialOut)
	hqb := startQUIC(t, "hq-b", "hq", []string{hqa.seed()}, dialOut)
	v7 := startQUIC(t, "v7-a", "vessel-7", []string{hqa.seed(), hqb.seed()}, dialOut)
	for _, m := range []*quicMember{hqa, hqb, v7} {
		for _, n := range []string{"hq-a", "hq-b", "v7-a"} {
			waitState(t, 5*time.Second, m.m, n, membership.StateAlive)
		}
	}
	time.Sleep(time.Second) // a few probe rounds
	for _, in := range hqa.m.Members() {
		if in.Name == "v7-a" && (in.Meta.Region != "vessel-7" || in.Meta.ProtoMax != 4 || in.Reach != "direct") {
			t.Errorf("hq-a sees v7-a as %+v", in)
		}
	}
	if st := hqa.tr.Stats(); st.PacketsRecv == 0 || st.BytesReceived["v7-a"] == 0 || st.BytesSent["v7-a"] == 0 {
		t.Errorf("hq-a gossip stats %+v: want packets and bytes both ways with v7-a", st)
	}

	// Graceful leave of hq-b: left, quickly, never dead.
	start := time.Now()
	if err := hqb.m.Leave(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	waitState(t, 3*time.Second, hqa.m, "hq-b", membership.StateLeft)
	waitState(t, 3*time.Second, v7.m, "hq-b", membership.StateLeft)
	t.Logf("leave seen by all in %v", time.Since(start).Round(time.Millisecond))
	hqb.m.Shutdown()
	time.Sleep(time.Second)
	if s, _ := stateOf(hqa.m, "hq-b"); s != membership.StateLeft {
		t.Errorf("hq-b after shutdown: %v, want left", s)
	}

	// Kill v7-a (no leave): hq-a sees it suspect or dead, then dead.
	start = time.Now()
	v7.m.Shutdown()
	waitState(t, 10*time.Second, hqa.m, "v7-a", membership.StateDead)
	t.Logf("death seen in %v; hq-a counters %+v", time.Since(start).Round(time.Millisecond), hqa.m.Counters())
	if c := hqa.m.Counters(); c.SuspicionsRaised == 0 {
		t.Errorf("hq-a raised no suspicion before the death: %+v", c)
	}
}

// TestQUICGossipRefusesStranger: a gateway with a certificate from the
// fleet CA that is not in the topology is refused and counted.
func TestQUICGossipRefusesStranger(t *testing.T) {
	hqa := startQUIC(t, "hq-a", "hq", nil, nil)
	ca, c := cert(t, "intruder")
	tr, err := quic.ListenGossip("127.0.0.1:0", quic.GossipOptions{ServerTLS: ca.ServerConfig(c), ClientTLS: ca.ClientConfig(c, "")})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Shutdown()
	if _, err := tr.WriteToAddress([]byte("hello"), memberlist.Address{Name: "hq-a", Addr: hqa.tr.Addr().String()}); err == nil {
		// The datagram may leave before the refusal arrives; the counter
		// is what matters.
		t.Log("write before refusal")
	}
	deadline := time.Now().Add(3 * time.Second)
	for hqa.tr.Stats().Refused == 0 {
		if time.Now().After(deadline) {
			t.Fatal("hq-a did not refuse the intruder")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st := hqa.tr.Stats(); st.PacketsRecv != 0 {
		t.Errorf("hq-a took %d packets from the intruder", st.PacketsRecv)
	}
}
