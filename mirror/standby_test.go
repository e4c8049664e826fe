package mirror_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/config"
	"github.com/meridian-gw/meridian/mirror"
)

// secondReceiver adds gateway gw2 to the fixture's destination region:
// a standby receiver of the leg.
func secondReceiver(f *config.File) {
	r := &f.Regions[1]
	g := r.Gateways[0]
	g.Name, g.Listen = "gw2", "gw2:1"
	tls := *g.TLS
	tls.CertFile, tls.KeyFile = "gw2.crt", "gw2.key"
	g.TLS = &tls
	r.Gateways = append(r.Gateways, g)
}

func inStatus(e *mirror.Engine) mirror.LegStatus {
	for _, l := range e.Status().Legs {
		if l.Direction == "in" {
			return l
		}
	}
	return mirror.LegStatus{}
}

// When the receiving gateway stops, the sender moves the leg to the
// standby receiver of the destination region, which resumes it from what
// is committed (its producers share the first one's transactional IDs):
// every record is read back exactly once, written by one gateway or the
// other.
func TestStandbyReceiverTakesOver(t *testing.T) {
	f := newFixture(t, []string{"t.a", "t.b"}, 4, secondReceiver)
	stopGW := f.gateway(t, "gw", 1<<20)
	f.gateway(t, "gw2", 1<<20)
	f.gateway(t, "ge", 0)
	f.produce(t, 3000, 0)
	checkExact(t, f.waitMirrored(t, 3000, 60*time.Second), 3000)
	if a, b := inStatus(f.engine("gw")).Records, inStatus(f.engine("gw2")).Records; a != 3000 || b != 0 {
		t.Fatalf("gw wrote %d and gw2 %d records; want all 3000 by gw, the first gateway of the region", a, b)
	}
	done := make(chan struct{})
	go func() { defer close(done); f.produce(t, 3000, 3000) }()
	stopGW()
	<-done
	f.produce(t, 1000, 6000)
	checkExact(t, f.waitMirrored(t, 7000, 60*time.Second), 7000)
	if b := inStatus(f.engine("gw2")).Records; b == 0 {
		t.Fatal("gw2 wrote nothing: the leg did not move to the standby receiver")
	}
	var standby string
	for _, p := range f.engine("ge").Status().Peers {
		standby = p.Standby
	}
	if standby != "gw2" {
		t.Fatalf("ge's peer status names standby %q; want gw2", standby)
	}
}

// With gossip saying the first receiver is alive again, the sender
// ends its session to the standby and the leg goes back (two receivers
// writing one leg would fence each other's transactions in turn); the
// move back is exact too.
func TestStandbyReceiverGivesTheLegBack(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out the 10 s a failed receiver is skipped")
	}
	var gwAlive atomic.Bool
	gwAlive.Store(true)
	f := newFixture(t, []string{"t.a"}, 4, secondReceiver)
	f.alive = func(name string) (bool, bool) {
		if name == "gw" {
			return gwAlive.Load(), true
		}
		return true, true
	}
	stopGW := f.gateway(t, "gw", 1<<20)
	f.gateway(t, "gw2", 1<<20)
	f.gateway(t, "ge", 0)
	f.produce(t, 1000, 0)
	checkExact(t, f.waitMirrored(t, 1000, 60*time.Second), 1000)
	gwAlive.Store(false)
	stopGW()
	f.produce(t, 1000, 1000)
	checkExact(t, f.waitMirrored(t, 2000, 60*time.Second), 2000)
	before := inStatus(f.engine("gw2")).Records
	if before == 0 {
		t.Fatal("gw2 wrote nothing while gw was down")
	}
	f.gateway(t, "gw", 1<<20) // a new engine: its status counts from zero
	gwAlive.Store(true)
	deadline := time.Now().Add(30 * time.Second)
	for standbyOf(f.engine("ge")) != "" {
		if time.Now().After(deadline) {
			t.Fatal("the leg did not go back to gw within 30 s of gossip having it alive")
		}
		time.Sleep(200 * time.Millisecond)
	}
	f.produce(t, 1000, 2000)
	checkExact(t, f.waitMirrored(t, 3000, 60*time.Second), 3000)
	if n := inStatus(f.engine("gw")).Records; n == 0 {
		t.Fatal("gw wrote nothing after the leg went back")
	}
	if n := inStatus(f.engine("gw2")).Records; n != before {
		t.Fatalf("gw2 wrote %d records after the leg went back to gw", n-before)
	}
}

func standbyOf(e *mirror.Engine) string {
	for _, p := range e.Status().Peers {
		if p.Standby != "" {
			return p.Standby
		}
	}
	return ""
}
