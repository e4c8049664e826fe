package lab_test

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/chaos/lab"
	"github.com/meridian-gw/meridian/internal/verify"
)

var e2eTopics = []string{"orders", "payments", "telemetry"}

func testLogger() *slog.Logger {
	if os.Getenv("MERIDIAN_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.DiscardHandler)
}

func newLab(t *testing.T, o lab.Options) *lab.Lab {
	t.Helper()
	o.Logger = testLogger()
	if o.Topics == nil {
		o.Topics = e2eTopics
		o.Partitions = 4 // 3 topics x 4 = 12 partitions
	}
	l, err := lab.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close lab: %v", err)
		}
	})
	return l
}

func produce(t *testing.T, l *lab.Lab, n int64, seed uint64) *lab.Producer {
	t.Helper()
	p, err := lab.NewProducer(l.EdgeOpts(), e2eTopics, seed, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	if err := p.Run(context.Background(), 0, n); err != nil {
		t.Fatal(err)
	}
	return p
}

// waitExact polls by read-back until the destination holds want records, then
// requires the mirror to be exact.
func waitExact(t *testing.T, l *lab.Lab, want int64, within time.Duration) *verify.Report {
	t.Helper()
	began := time.Now()
	deadline := began.Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		rep, err := verify.Compare(ctx, l.EdgeOpts(), l.HQOpts(), e2eTopics, l.RenameTopic)
		cancel()
		if err == nil && rep.Mirrored+rep.Duplicated+rep.Unexpected >= want || time.Now().After(deadline) {
			if err != nil {
				t.Fatalf("read-back: %v", err)
			}
			if !rep.OK() || rep.Produced != want || rep.Mirrored != want {
				t.Fatalf("mirror not exact after %v (of %v allowed): %v (want produced=mirrored=%d)\n%v", time.Since(began).Round(100*time.Millisecond), within, rep, want, rep.Samples)
			}
			return rep
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func TestQUICMirror200k(t *testing.T) {
	if testing.Short() {
		t.Skip("200k-record end to end test")
	}
	for _, pass := range []bool{false, true} {
		t.Run(modeName(pass), func(t *testing.T) { testMirror200k(t, lab.Options{Passthrough: pass}) })
	}
}

// modeName names a subtest by the link's mode.
func modeName(passthrough bool) string {
	if passthrough {
		return "passthrough"
	}
	return "records"
}

// testMirror200k mirrors 200,000 records through a lab made with o and
// reads them back; real-Kafka and lossy-link variants pass their options.
func testMirror200k(t *testing.T, o lab.Options) {
	passthrough := o.Passthrough
	base := runtime.NumGoroutine()
	func() {
		began := time.Now()
		l := newLab(t, o)
		if err := l.Start(lab.HQGateway); err != nil {
			t.Fatal(err)
		}
		if err := l.Start(lab.EdgeGateway); err != nil {
			t.Fatal(err)
		}
		produce(t, l, 200_000, 1)
		rep := waitExact(t, l, 200_000, 3*time.Minute)
		t.Logf("read-back after %v: %v", time.Since(began).Round(100*time.Millisecond), rep)
		if l.Proxy != nil {
			t.Logf("impairment proxy: %+v", l.Proxy.Stats())
		}
		if rep.Partitions != 12 {
			t.Errorf("records landed in %d partitions, want all 12", rep.Partitions)
		}
		st := l.Gateway(lab.EdgeGateway).Status()
		// Passthrough forwards batches the producer compressed already.
		if len(st.Legs) != 1 || st.Legs[0].WireBytes == 0 || !passthrough && st.Legs[0].WireBytes >= st.Legs[0].RawBytes {
			t.Errorf("edge leg status = %+v, want compressed wire bytes below raw bytes", st.Legs)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}()
	// Every goroutine the lab started is gone after Close.
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base+5 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > base+5 {
		buf := make([]byte, 1<<20)
		t.Fatalf("goroutines leaked: %d before, %d after\n%s", base, n, buf[:runtime.Stack(buf, true)])
	}
}

func TestQUICMirrorSurvivesRestartsAndBlackout(t *testing.T) {
	if testing.Short() {
		t.Skip("long end to end test")
	}
	for _, pass := range []bool{false, true} {
		t.Run(modeName(pass), func(t *testing.T) {
			testRestartsAndBlackout(t, lab.Options{Profile: "lan", Window: 1 << 20, Passthrough: pass}, 120_000)
		})
	}
}

// testRestartsAndBlackout streams total records through a lab made with o
// (which needs a Profile, for the proxy) while the receiving gateway is
// stopped and restarted twice and the link blacks out for 5 s, then reads
// the destination back.
func testRestartsAndBlackout(t *testing.T, o lab.Options, total int64) {
	began := time.Now()
	l := newLab(t, o)
	for _, g := range []string{lab.HQGateway, lab.EdgeGateway} {
		if err := l.Start(g); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, err := lab.NewProducer(l.EdgeOpts(), e2eTopics, 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, int(total/15), total) }() // about 15 s of streaming

	waitProduced := func(n int64) {
		for p.Produced() < n {
			time.Sleep(50 * time.Millisecond)
		}
	}
	// Kill and restart the receiving gateway twice mid-stream.
	for _, at := range []int64{total * 5 / 24, total * 10 / 24} {
		waitProduced(at)
		if err := l.Stop(lab.HQGateway); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		if err := l.Start(lab.HQGateway); err != nil {
			t.Fatal(err)
		}
	}
	// Black the link out for 5 s.
	waitProduced(total * 15 / 24)
	l.Proxy.SetBlackout(true)
	time.Sleep(5 * time.Second)
	l.Proxy.SetBlackout(false)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	rep := waitExact(t, l, total, 3*time.Minute)
	t.Logf("read-back after %v: %v", time.Since(began).Round(100*time.Millisecond), rep)
}
