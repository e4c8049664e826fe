package membership_test

import (
	"bytes"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/topology/membership"
)

// startUDP starts a member on memberlist's own UDP/TCP transport on
// loopback, encrypted with keys.
func startUDP(t *testing.T, name string, keys [][]byte, seeds []string) (*membership.Member, string) {
	t.Helper()
	cfg := fastConfig()
	cfg.BindAddr, cfg.BindPort = "127.0.0.1", 0
	m, err := membership.New(membership.Options{
		Name: name, Meta: membership.Meta{Region: "hq", Gateway: name, ProtoMin: 1, ProtoMax: 4},
		Config: cfg, Keys: keys, Seeds: seeds, Rejoin: 300 * time.Millisecond, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	m.Start()
	t.Cleanup(func() { m.Shutdown() })
	ln := m.Memberlist().LocalNode()
	return m, name + "/" + net.JoinHostPort(ln.Addr.String(), strconv.Itoa(int(ln.Port)))
}

func primary(t *testing.T, m *membership.Member) string {
	t.Helper()
	ks, err := m.Keys()
	if err != nil {
		t.Fatal(err)
	}
	return ks[0].Fingerprint
}

// TestKeyRotation rotates the gossip key of two members without a
// restart (install on both, use on both, remove the old one on both)
// while they keep seeing each other alive; a member with only the old key
// is then kept out, its gossip dropped and counted.
func TestKeyRotation(t *testing.T) {
	k1, k2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 16)
	a, aSeed := startUDP(t, "hq-a", [][]byte{k1}, nil)
	b, _ := startUDP(t, "hq-b", [][]byte{k1}, []string{aSeed})
	waitState(t, 5*time.Second, a, "hq-b", membership.StateAlive)
	waitState(t, 5*time.Second, b, "hq-a", membership.StateAlive)
	fp1, fp2 := membership.Fingerprint(k1), membership.Fingerprint(k2)

	steps := []struct {
		name string
		do   func(*membership.Member) error
	}{
		{"install", func(m *membership.Member) error { return m.InstallKey(k2) }},
		{"use", func(m *membership.Member) error { return m.UseKey(fp2) }},
		{"remove", func(m *membership.Member) error { return m.RemoveKey(fp1) }},
	}
	for _, st := range steps {
		for _, m := range []*membership.Member{a, b} {
			if err := st.do(m); err != nil {
				t.Fatalf("%s on %s: %v", st.name, m.LocalName(), err)
			}
			// Between the two members' steps they disagree on the
			// primary: gossip must still flow.
			time.Sleep(700 * time.Millisecond)
			waitState(t, time.Second, a, "hq-b", membership.StateAlive)
			waitState(t, time.Second, b, "hq-a", membership.StateAlive)
		}
	}
	if p := primary(t, a); p != fp2 {
		t.Errorf("hq-a primary %s, want %s", p, fp2)
	}
	if ks, _ := b.Keys(); len(ks) != 1 || ks[0].Fingerprint != fp2 {
		t.Errorf("hq-b keys %+v, want only %s", ks, fp2)
	}
	if err := a.RemoveKey(fp2); err == nil {
		t.Error("removing the primary key worked")
	}
	if err := a.UseKey("0000"); err == nil {
		t.Error("using an unknown fingerprint worked")
	}

	// A member with the old key only cannot join.
	c, _ := startUDP(t, "hq-c", [][]byte{k1}, []string{aSeed})
	time.Sleep(1500 * time.Millisecond)
	if s, ok := stateOf(a, "hq-c"); ok {
		t.Errorf("hq-a sees hq-c (old key only) as %v", s)
	}
	if _, ok := stateOf(c, "hq-a"); ok {
		t.Error("hq-c (old key only) joined hq-a")
	}
	if a.Counters().Dropped == 0 {
		t.Errorf("hq-a dropped nothing from hq-c: %+v", a.Counters())
	}
}

func TestNoKeyring(t *testing.T) {
	m, _ := startUDP(t, "hq-a", nil, nil)
	if _, err := m.Keys(); err != membership.ErrNoKeyring {
		t.Errorf("Keys without a keyring: %v", err)
	}
}

// TestStrangerRefused: a node that is not a gateway of the topology, or
// whose metadata names another gateway, is never taken as a member, and
// the refusals are counted.
func TestStrangerRefused(t *testing.T) {
	cfg := fastConfig()
	cfg.BindAddr, cfg.BindPort = "127.0.0.1", 0
	a, err := membership.New(membership.Options{
		Name: "hq-a", Meta: membership.Meta{Region: "hq", Gateway: "hq-a", ProtoMin: 1, ProtoMax: 4},
		Config: cfg, Logger: testLogger(t),
		Allow: func(n string) bool { return n == "hq-a" || n == "hq-b" || n == "hq-c" },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Shutdown() })
	ln := a.Memberlist().LocalNode()
	aSeed := "hq-a/" + net.JoinHostPort(ln.Addr.String(), strconv.Itoa(int(ln.Port)))
	startUDP(t, "stranger", nil, []string{aSeed})
	// hq-c whose metadata claims to be hq-b.
	cfg2 := fastConfig()
	cfg2.BindAddr, cfg2.BindPort = "127.0.0.1", 0
	liar, err := membership.New(membership.Options{Name: "hq-c", Meta: membership.Meta{Region: "hq", Gateway: "hq-b", ProtoMin: 1, ProtoMax: 4},
		Config: cfg2, Seeds: []string{aSeed}, Rejoin: 300 * time.Millisecond, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	liar.Start()
	t.Cleanup(func() { liar.Shutdown() })
	b, _ := startUDP(t, "hq-b", nil, []string{aSeed})
	waitState(t, 5*time.Second, a, "hq-b", membership.StateAlive)
	time.Sleep(time.Second)
	for _, n := range []string{"stranger", "hq-c"} {
		if s, ok := stateOf(a, n); ok {
			t.Errorf("hq-a took %s as a member (%v)", n, s)
		}
	}
	if c := a.Counters(); c.Refused == 0 {
		t.Errorf("no refusal counted: %+v", c)
	}
	_ = b
}
