package mirror_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/meridian-gw/meridian/config"
	"github.com/meridian-gw/meridian/internal/verify"
)

// One leg's destination topic takes long to create (its CreateTopics is
// held at the destination); the other leg of the same session keeps
// flowing meanwhile, and the held leg catches up once its topic exists.
func TestSlowTopicPreparationDoesNotStallOtherLegs(t *testing.T) {
	secondRoute := func(f *config.File) {
		r := f.Routes[0]
		r.Name, r.Topics = "r2", config.TopicFilter{Include: []string{`^u\.`}}
		f.Routes = append(f.Routes, r)
	}
	f := newFixture(t, []string{"t.a", "u.a"}, 2, secondRoute)
	held, release := make(chan struct{}), make(chan struct{})
	var heldOnce, releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) }) // before the cluster closes
	f.dst.ControlKey(int16(kmsg.CreateTopics), func(req kmsg.Request) (kmsg.Response, error, bool) {
		f.dst.KeepControl()
		for _, ct := range req.(*kmsg.CreateTopicsRequest).Topics {
			if ct.Topic == "u.a" {
				heldOnce.Do(func() { close(held) })
				f.dst.SleepControl(func() { <-release })
			}
		}
		return nil, nil, false
	})
	const n = 500
	produceTo(t, f, "u.a", n)
	f.gateway(t, "gw", 0)
	f.gateway(t, "ge", 0)
	select {
	case <-held:
	case <-time.After(30 * time.Second):
		t.Fatal("the destination topic of u.a was never created")
	}
	produceTo(t, f, "t.a", n)
	// The receiver gives a topic 30 s to be prepared: t.a must be mirrored
	// well within that while u.a's creation is held.
	src := []kgo.Opt{kgo.SeedBrokers(f.src.ListenAddrs()...)}
	dst := []kgo.Opt{kgo.SeedBrokers(f.dst.ListenAddrs()...)}
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		rep, err := verify.Compare(ctx, src, dst, []string{"t.a"}, func(s string) string { return s })
		cancel()
		if err == nil && rep.Mirrored == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("t.a not mirrored while u.a's topic was being created: %+v, %v", rep, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	releaseOnce.Do(func() { close(release) })
	checkExact(t, f.waitMirrored(t, 2*n, 60*time.Second), 2*n)
}

// produceTo writes n records to topic and returns when all are acknowledged.
func produceTo(t *testing.T, f *fixture, topic string, n int) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(f.src.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	recs := make([]*kgo.Record, n)
	for i := range recs {
		recs[i] = &kgo.Record{Topic: topic, Key: []byte(strconv.Itoa(i)), Value: []byte(topic + " " + strconv.Itoa(i))}
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}
