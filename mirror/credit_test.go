package mirror_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/config"
	"github.com/meridian-gw/meridian/internal/verify"
	"github.com/meridian-gw/meridian/mirror"
	"github.com/meridian-gw/meridian/routing"
	"github.com/meridian-gw/meridian/transport"
)

// TestPriorityRouteOvertakesABacklogUnderARateCap runs two routes over one
// rate-capped link: telemetry (priority 0) with a backlog of about 12 s at
// the cap, and alarms (priority 10) produced once the backlog is flowing.
// Every alarm must be at the destination while most of the telemetry
// backlog is still at the source, and the cap must hold.
func TestPriorityRouteOvertakesABacklogUnderARateCap(t *testing.T) {
	if testing.Short() {
		t.Skip("about 15 s")
	}
	const rateBits = 4_000_000 // 500 KB/s
	f := newFixture(t, []string{"tele.x", "alarm.x"}, 2, func(c *config.File) {
		c.Links[0].RateLimit = 4_000_000
		c.Routes[0].Name, c.Routes[0].Topics.Include = "telemetry", []string{`^tele\.`}
		alarms := c.Routes[0]
		alarms.Name, alarms.Priority, alarms.Topics.Include = "alarms", 10, []string{`^alarm\.`}
		c.Routes = append(c.Routes, alarms)
	})
	ctx := context.Background()
	src := []kgo.Opt{kgo.SeedBrokers(f.src.ListenAddrs()...)}
	dst := []kgo.Opt{kgo.SeedBrokers(f.dst.ListenAddrs()...)}
	cl, err := kgo.NewClient(src...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// 6 MB of incompressible telemetry: 12 s at the cap.
	const teleN, teleSize = 1500, 4000
	var recs []*kgo.Record
	for i := range teleN {
		v := make([]byte, teleSize)
		rand.Read(v)
		recs = append(recs, &kgo.Record{Topic: "tele.x", Key: fmt.Append(nil, i), Value: v})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	f.gateway(t, "gw", 0)
	f.gateway(t, "ge", 0)
	count := func(topic string) int64 {
		rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		r, err := verify.Compare(rctx, src, dst, []string{topic}, func(s string) string { return s })
		if err != nil {
			return 0
		}
		return r.Mirrored
	}
	for count("tele.x") < 50 {
		if time.Since(start) > 20*time.Second {
			t.Fatal("telemetry did not start flowing")
		}
		time.Sleep(100 * time.Millisecond)
	}
	alarmsAt := time.Now()
	var alarms []*kgo.Record
	for i := range 20 {
		alarms = append(alarms, &kgo.Record{Topic: "alarm.x", Key: fmt.Append(nil, i), Value: fmt.Appendf(nil, "alarm %d", i)})
	}
	if err := cl.ProduceSync(ctx, alarms...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	for count("alarm.x") < 20 {
		if time.Since(alarmsAt) > 30*time.Second {
			t.Fatal("alarms not mirrored")
		}
		time.Sleep(50 * time.Millisecond)
	}
	alarmDelay := time.Since(alarmsAt)
	teleThen := count("tele.x")
	t.Logf("alarms mirrored %v after they were produced, with %d of %d telemetry records mirrored", alarmDelay.Round(time.Millisecond), teleThen, teleN)
	if teleThen > teleN*3/4 {
		t.Errorf("alarms waited for the telemetry backlog: %d of %d telemetry records were mirrored first", teleThen, teleN)
	}
	for count("tele.x") < teleN {
		if time.Since(start) > 60*time.Second {
			t.Fatal("telemetry backlog not mirrored within 60 s")
		}
		time.Sleep(200 * time.Millisecond)
	}
	took := time.Since(start)
	rate := float64(teleN*teleSize*8) / took.Seconds()
	t.Logf("telemetry: %d bytes in %v: %.2f Mbit/s under a %d Mbit/s cap", teleN*teleSize, took.Round(time.Millisecond), rate/1e6, rateBits/1_000_000)
	if rate > rateBits*1.1 {
		t.Errorf("link carried %.2f Mbit/s, over its %d Mbit/s cap", rate/1e6, rateBits/1_000_000)
	}
	f.topics = []string{"tele.x", "alarm.x"}
	checkExact(t, f.waitMirrored(t, teleN+20, 10*time.Second), teleN+20)
}

// TestLinkWindowIsGranted: a link's window (links[].window) is the credit
// window its sessions are granted, instead of the gateway's; a link
// without one gets the gateway's.
func TestLinkWindowIsGranted(t *testing.T) {
	for _, tc := range []struct {
		name       string
		link, want int64
	}{
		{"link window", 256 << 10, 256 << 10},
		{"gateway window", 0, 8 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, []string{"t.a"}, 1, func(c *config.File) { c.Links[0].Window = config.ByteSize(tc.link) })
			table, err := routing.Compile(f.topo, "gw")
			if err != nil {
				t.Fatal(err)
			}
			eng, err := mirror.New(mirror.Options{Table: table, Window: 8 << 20,
				Listen: func(transport.Accept) (transport.Listener, error) { return nil, errors.New("not bound") }})
			if err != nil {
				t.Fatal(err)
			}
			w, err := eng.Accept(&transport.Hello{Gateway: "ge", Region: "east", Legs: []string{table.In[0].ID}})
			if err != nil {
				t.Fatal(err)
			}
			if w.Window != tc.want {
				t.Errorf("granted window %d, want %d", w.Window, tc.want)
			}
		})
	}
}
