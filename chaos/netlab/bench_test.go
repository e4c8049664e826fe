//go:build linux

package netlab_test

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/chaos"
	"github.com/meridian-gw/meridian/chaos/netlab"
	"github.com/meridian-gw/meridian/chaos/netlab/netlabtest"
)

// tcpSink listens in region hq and discards what it receives.
func tcpSink(tb testing.TB, lab *netlab.Lab) net.Listener {
	tb.Helper()
	ln, err := lab.Listen("hq", "tcp", "198.18.2.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	return ln
}

// pumpThroughput sends TCP from edge to hq for d over an unimpaired link
// and returns the goodput in bit/s.
func pumpThroughput(tb testing.TB, lab *netlab.Lab, d time.Duration) float64 {
	ln := tcpSink(tb, lab)
	defer ln.Close()
	c, err := lab.DialContext("edge")(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 256<<10)
	var sent int64
	start := time.Now()
	for time.Since(start) < d {
		n, err := c.Write(buf)
		sent += int64(n)
		if err != nil {
			tb.Fatal(err)
		}
	}
	return float64(sent) * 8 / time.Since(start).Seconds()
}

// TestPumpThroughput logs the pump's TCP goodput across an unimpaired link
// and, outside the race detector, requires at least 200 Mbit/s.
func TestPumpThroughput(t *testing.T) {
	lab := netlabtest.New(t, netlab.Options{Regions: []string{"edge", "hq"}})
	bps := pumpThroughput(t, lab, 2*time.Second)
	st := lab.Link("edge", "hq").Stats()
	t.Logf("pump: TCP goodput edge -> hq %.0f Mbit/s (up %d packets, %d drops; down %d packets)",
		bps/1e6, st.Up.Packets, st.Up.Dropped.Total(), st.Down.Packets)
	if !raceEnabled && bps < 200e6 {
		t.Errorf("pump carries %.0f Mbit/s, want at least 200 Mbit/s", bps/1e6)
	}

	// The same with 1 ms each way: every packet goes through the delivery
	// heap and the timerfd. Logged only; TCP's window sets the pace here.
	lk := lab.Link("edge", "hq")
	if err := lk.SetProfile(&chaos.Profile{Name: "1ms", Up: chaos.Params{Delay: time.Millisecond}, Down: chaos.Params{Delay: time.Millisecond}}); err != nil {
		t.Fatal(err)
	}
	before := lk.Stats()
	bps = pumpThroughput(t, lab, 2*time.Second)
	st = lk.Stats()
	t.Logf("pump: TCP goodput edge -> hq over 2 ms RTT %.0f Mbit/s (up %d packets)", bps/1e6, st.Up.Packets-before.Up.Packets)
}

// BenchmarkPumpTCP measures TCP goodput through the pump on an unimpaired
// link: go test -run '^$' -bench PumpTCP ./chaos/netlab/
func BenchmarkPumpTCP(b *testing.B) {
	lab := netlabtest.New(b, netlab.Options{Regions: []string{"edge", "hq"}})
	ln := tcpSink(b, lab)
	defer ln.Close()
	c, err := lab.DialContext("edge")(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)*float64(len(buf))*8/b.Elapsed().Seconds()/1e6, "Mbit/s")
}
