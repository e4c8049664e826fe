package mirror_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/config"
	"github.com/meridian-gw/meridian/mirror/dr"
)

func TestFencedLegWritesNothing(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) { testFencedLeg(t, m.mods...) })
	}
}

func testFencedLeg(t *testing.T, mods ...func(*config.File)) {
	f := newFixture(t, []string{"t.a", "t.b"}, 2, mods...)
	f.tuning.FenceRecheck = 200 * time.Millisecond
	f.gateway(t, "ge", 0)
	stopRecv := f.gateway(t, "gw", 0)
	f.produce(t, 500, 0)
	checkExact(t, f.waitMirrored(t, 500, 30*time.Second), 500)

	ctx := context.Background()
	dst := []kgo.Opt{kgo.SeedBrokers(f.dst.ListenAddrs()...)}
	if _, err := dr.FenceLeg(ctx, dst, "r:west/kafka", 2, "failover to west"); err != nil {
		t.Fatal(err)
	}
	fenced := func() string {
		for _, l := range f.engine("gw").Status().Legs {
			if l.Direction == "in" {
				return l.Fenced
			}
		}
		return ""
	}
	// The running receiver is fenced by the cluster and stops.
	f.produce(t, 500, 500)
	deadline := time.Now().Add(10 * time.Second)
	for fenced() == "" && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if got := fenced(); !strings.Contains(got, "failover to west") {
		t.Fatalf("status fenced = %q, want the fence's reason", got)
	}
	time.Sleep(time.Second)
	rep := f.waitMirrored(t, 500, time.Second)
	if rep.Mirrored != 500 || rep.Duplicated+rep.Unexpected+rep.Reordered != 0 {
		t.Fatalf("after the fence: %v, want exactly the 500 records mirrored before it", rep)
	}

	// A stale receiver that comes back is fenced too: nothing lands.
	stopRecv()
	f.gateway(t, "gw", 0)
	time.Sleep(1500 * time.Millisecond)
	if rep := f.waitMirrored(t, 500, time.Second); rep.Mirrored != 500 {
		t.Fatalf("a restarted receiver wrote through the fence: %v", rep)
	}
	if fenced() == "" {
		t.Error("restarted receiver does not report the fence")
	}
	// The fence reached the sending gateway over the link: it stopped
	// reading the source and says why.
	senderFenced := func() string {
		for _, l := range f.engine("ge").Status().Legs {
			if l.Direction == "out" {
				return l.Fenced
			}
		}
		return ""
	}
	deadline = time.Now().Add(5 * time.Second)
	for senderFenced() == "" && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if got := senderFenced(); !strings.Contains(got, "failover to west") {
		t.Errorf("sender status fenced = %q, want the fence's reason", got)
	}

	// Lifting the fence (failback) resumes exactly where the mirror stopped.
	if err := dr.LiftFence(ctx, dst, "r:west/kafka", 3, "failback"); err != nil {
		t.Fatal(err)
	}
	checkExact(t, f.waitMirrored(t, 1000, 30*time.Second), 1000)
	if got := senderFenced(); got != "" {
		t.Errorf("sender still reports the lifted fence: %q", got)
	}
}
