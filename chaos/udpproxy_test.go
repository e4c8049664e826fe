package chaos_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/chaos"
)

var loopback = &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}

// echoServer is a UDP echo server on loopback that remembers its peers.
type echoServer struct {
	conn  *net.UDPConn
	mu    sync.Mutex
	peers map[netip.AddrPort]bool
}

func startEcho(tb testing.TB) *echoServer {
	tb.Helper()
	conn, err := net.ListenUDP("udp", loopback)
	if err != nil {
		tb.Fatal(err)
	}
	_ = conn.SetReadBuffer(4 << 20)
	_ = conn.SetWriteBuffer(4 << 20)
	e := &echoServer{conn: conn, peers: map[netip.AddrPort]bool{}}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 65536)
		for {
			n, addr, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			e.mu.Lock()
			e.peers[addr] = true
			e.mu.Unlock()
			_, _ = conn.WriteToUDPAddrPort(buf[:n], addr)
		}
	})
	tb.Cleanup(func() {
		conn.Close()
		wg.Wait()
	})
	return e
}

func (e *echoServer) addr() string { return e.conn.LocalAddr().String() }

func (e *echoServer) numPeers() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.peers)
}

type testWriter struct{ tb testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.tb.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}

func startProxy(tb testing.TB, opts chaos.UDPProxyOptions) *chaos.UDPProxy {
	tb.Helper()
	if opts.Logger == nil && testing.Verbose() {
		opts.Logger = slog.New(slog.NewTextHandler(testWriter{tb}, nil))
	}
	px, err := chaos.NewUDPProxy(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := px.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return px
}

func dial(tb testing.TB, px *chaos.UDPProxy) *net.UDPConn {
	tb.Helper()
	c, err := net.DialUDP("udp", nil, px.Addr())
	if err != nil {
		tb.Fatal(err)
	}
	_ = c.SetReadBuffer(4 << 20)
	tb.Cleanup(func() { c.Close() })
	return c
}

// ping sends one numbered datagram and waits for its echo.
func ping(c *net.UDPConn, seq uint32, timeout time.Duration) (time.Duration, bool) {
	var out, in [64]byte
	binary.BigEndian.PutUint32(out[:], seq)
	start := time.Now()
	if _, err := c.Write(out[:]); err != nil {
		return 0, false
	}
	deadline := start.Add(timeout)
	_ = c.SetReadDeadline(deadline)
	for {
		n, err := c.Read(in[:])
		if err != nil {
			return 0, false
		}
		if n >= 4 && binary.BigEndian.Uint32(in[:]) == seq {
			return time.Since(start), true
		}
	}
}

// waitFor polls cond until it holds or d passes.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestUDPProxyWANRTT(t *testing.T) {
	t.Parallel()
	echo := startEcho(t)
	wan, err := chaos.LoadProfile("wan")
	if err != nil {
		t.Fatal(err)
	}
	px := startProxy(t, chaos.UDPProxyOptions{Target: echo.addr(), Profile: wan, Seed: 1})
	c := dial(t, px)

	var rtts []time.Duration
	for i := range 20 {
		if rtt, ok := ping(c, uint32(i), time.Second); ok {
			rtts = append(rtts, rtt)
		}
	}
	if len(rtts) < 18 {
		t.Fatalf("%d of 20 pings answered (seed %d)", len(rtts), px.Seed())
	}
	slices.Sort(rtts)
	median := rtts[len(rtts)/2]
	t.Logf("wan echo RTT: min %v median %v max %v (profile %v)", rtts[0], median, rtts[len(rtts)-1], wan.RTT())
	if lo, hi := wan.RTT()*9/10, wan.RTT()*11/10; median < lo || median > hi {
		t.Errorf("median RTT %v, want within [%v, %v] (seed %d)", median, lo, hi, px.Seed())
	}

	// A second client gets its own upstream socket.
	c2 := dial(t, px)
	if _, ok := ping(c2, 1000, time.Second); !ok {
		t.Fatal("second client got no echo")
	}
	if got := echo.numPeers(); got != 2 {
		t.Errorf("server saw %d peers, want 2", got)
	}
	if st := px.Stats(); st.Clients != 2 || st.ClientsTotal != 2 {
		t.Errorf("Stats clients = %d (total %d), want 2", st.Clients, st.ClientsTotal)
	}

	// Live change to no impairment.
	if err := px.SetProfile(nil); err != nil {
		t.Fatal(err)
	}
	if rtt, ok := ping(c, 2000, time.Second); !ok || rtt > 20*time.Millisecond {
		t.Errorf("after SetProfile(nil): rtt %v ok %v, want fast", rtt, ok)
	}
	if err := px.SetProfile(wan.WithLoss(3)); err == nil {
		t.Error("SetProfile with loss 3 succeeded")
	}
}

func TestUDPProxyLoss(t *testing.T) {
	t.Parallel()
	const (
		loss = 0.10
		n    = 3000
		seed = 1
	)
	echo := startEcho(t)
	lan, err := chaos.LoadProfile("lan")
	if err != nil {
		t.Fatal(err)
	}
	px := startProxy(t, chaos.UDPProxyOptions{Target: echo.addr(), Profile: lan.WithLoss(loss), Seed: seed})
	c := dial(t, px)

	var got atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 2048)
		for {
			if _, err := c.Read(buf); err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			got.Add(1)
		}
	})
	defer wg.Wait()
	defer c.Close()

	payload := make([]byte, 1000)
	for i := range n {
		binary.BigEndian.PutUint32(payload, uint32(i))
		if _, err := c.Write(payload); err != nil {
			t.Fatal(err)
		}
		if i%50 == 49 {
			time.Sleep(2 * time.Millisecond) // stay well inside socket buffers
		}
	}
	settled := waitFor(3*time.Second, func() bool {
		st := px.Stats()
		return st.Up.Received == n && st.Up.Packets+st.Up.Dropped.Total() == n && st.Down.Received == st.Up.Packets &&
			st.Down.Packets+st.Down.Dropped.Total() == st.Down.Received && got.Load() == int64(st.Down.Packets)
	})
	st := px.Stats()
	if !settled {
		t.Fatalf("traffic did not settle: %+v, echoes %d (seed %d)", st, got.Load(), seed)
	}
	upLoss := float64(st.Up.Dropped.Loss) / float64(st.Up.Received)
	downLoss := float64(st.Down.Dropped.Loss) / float64(st.Down.Received)
	e2e := 1 - float64(got.Load())/n
	want := 1 - (1-loss)*(1-loss)
	t.Logf("loss %.2f each way: up %.4f down %.4f, echo loss %.4f (want %.4f) over %d packets (seed %d)\nstats %+v", loss, upLoss, downLoss, e2e, want, n, seed, st)
	if !within(upLoss, loss, 0.2) || !within(downLoss, loss, 0.2) {
		t.Errorf("per-direction loss up %.4f down %.4f, want %.2f within 20%% (seed %d)", upLoss, downLoss, loss, seed)
	}
	if !within(e2e, want, 0.15) {
		t.Errorf("echo loss %.4f, want %.4f within 15%% (seed %d)", e2e, want, seed)
	}
	if st.Up.Dropped.Queue+st.Up.Dropped.Blackout+st.Up.Dropped.MTU+st.Up.Dropped.Error != 0 {
		t.Errorf("unexpected drops: %+v", st.Up.Dropped)
	}
}

func TestUDPProxyBlackout(t *testing.T) {
	t.Parallel()
	echo := startEcho(t)
	px := startProxy(t, chaos.UDPProxyOptions{Target: echo.addr(), Seed: 1})
	c := dial(t, px)
	seq := uint32(0)
	next := func() uint32 { seq++; return seq }

	if _, ok := ping(c, next(), time.Second); !ok {
		t.Fatal("no echo before blackout")
	}
	px.SetBlackout(true)
	for range 5 {
		if _, ok := ping(c, next(), 50*time.Millisecond); ok {
			t.Fatal("echo during blackout")
		}
	}
	if st := px.Stats(); st.Up.Dropped.Blackout != 5 {
		t.Errorf("blackout drops = %d, want 5", st.Up.Dropped.Blackout)
	}
	px.SetBlackout(false)
	if _, ok := ping(c, next(), time.Second); !ok {
		t.Fatal("no echo after blackout")
	}

	// Timed blackout: off by itself.
	start := time.Now()
	px.Blackout(300 * time.Millisecond)
	if _, ok := ping(c, next(), 50*time.Millisecond); ok {
		t.Fatal("echo during Blackout(300ms)")
	}
	if !waitFor(2*time.Second, func() bool { _, ok := ping(c, next(), 20*time.Millisecond); return ok }) {
		t.Fatal("no recovery after Blackout(300ms)")
	}
	if el := time.Since(start); el < 290*time.Millisecond {
		t.Errorf("recovered after %v, want >= 300ms", el)
	}

	// Packets already in flight are dropped when a blackout begins.
	wan, err := chaos.LoadProfile("wan")
	if err != nil {
		t.Fatal(err)
	}
	if err := px.SetProfile(wan); err != nil {
		t.Fatal(err)
	}
	before := px.Stats()
	if _, err := c.Write([]byte("in flight")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond)
	px.Blackout(100 * time.Millisecond)
	if !waitFor(time.Second, func() bool { return px.Stats().Up.Dropped.Blackout > before.Up.Dropped.Blackout }) {
		t.Errorf("in-flight packet not dropped by blackout: %+v", px.Stats().Up)
	}
}

func TestUDPProxyIdleExpiry(t *testing.T) {
	t.Parallel()
	echo := startEcho(t)
	px := startProxy(t, chaos.UDPProxyOptions{Target: echo.addr(), IdleTimeout: 100 * time.Millisecond})
	c := dial(t, px)
	if _, ok := ping(c, 1, time.Second); !ok {
		t.Fatal("no echo")
	}
	if st := px.Stats(); st.Clients != 1 {
		t.Fatalf("clients = %d, want 1", st.Clients)
	}
	if !waitFor(2*time.Second, func() bool { return px.Stats().Clients == 0 }) {
		t.Fatal("idle client not expired")
	}
	// It comes back with a new upstream socket.
	if _, ok := ping(c, 2, time.Second); !ok {
		t.Fatal("no echo after expiry")
	}
	if st := px.Stats(); st.Clients != 1 || st.ClientsTotal != 2 || echo.numPeers() != 2 {
		t.Errorf("after return: clients %d total %d server peers %d, want 1, 2, 2", st.Clients, st.ClientsTotal, echo.numPeers())
	}
}

func TestUDPProxyOptions(t *testing.T) {
	t.Parallel()
	if _, err := chaos.NewUDPProxy(chaos.UDPProxyOptions{}); err == nil {
		t.Error("no target: succeeded")
	}
	if _, err := chaos.NewUDPProxy(chaos.UDPProxyOptions{Target: "127.0.0.1:9", Listen: "nonsense"}); err == nil {
		t.Error("bad listen address: succeeded")
	}
	bad := &chaos.Profile{Name: "bad", Up: chaos.Params{Loss: 2}}
	if _, err := chaos.NewUDPProxy(chaos.UDPProxyOptions{Target: "127.0.0.1:9", Profile: bad}); err == nil || !strings.Contains(err.Error(), "up.loss") {
		t.Errorf("bad profile: err = %v, want one naming up.loss", err)
	}
	px, err := chaos.NewUDPProxy(chaos.UDPProxyOptions{Target: "127.0.0.1:9"})
	if err != nil {
		t.Fatal(err)
	}
	if px.Seed() == 0 {
		t.Error("Seed() = 0, want a random seed")
	}
	if !px.Addr().IP.IsLoopback() || px.Addr().Port == 0 {
		t.Errorf("Addr() = %v, want 127.0.0.1 and a port", px.Addr())
	}
	if err := px.Close(); err != nil {
		t.Error(err)
	}
	if err := px.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// Not parallel: it counts goroutines.
func TestUDPProxyCloseNoLeak(t *testing.T) {
	echo := startEcho(t)
	before := runtime.NumGoroutine()

	wan, err := chaos.LoadProfile("wan")
	if err != nil {
		t.Fatal(err)
	}
	px, err := chaos.NewUDPProxy(chaos.UDPProxyOptions{Target: echo.addr(), Profile: wan})
	if err != nil {
		t.Fatal(err)
	}
	var conns []*net.UDPConn
	for i := range 5 {
		c, err := net.DialUDP("udp", nil, px.Addr())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		if _, ok := ping(c, uint32(i), time.Second); !ok {
			t.Fatalf("client %d: no echo", i)
		}
		_, _ = c.Write([]byte("still in flight at Close"))
	}
	if got := runtime.NumGoroutine(); got < before+5 {
		t.Errorf("goroutines with 5 clients = %d, want at least %d", got, before+5)
	}
	if err := px.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range conns {
		c.Close()
	}
	if !waitFor(2*time.Second, func() bool { return runtime.NumGoroutine() <= before }) {
		buf := make([]byte, 1<<20)
		t.Fatalf("goroutines: %d before, %d after Close\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
	}
}

// TestUDPProxyFlood offers about 100k packets/s for a while through the wan
// profile (so every packet is scheduled) and checks that the proxy keeps
// its books and still answers afterwards.
func TestUDPProxyFlood(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("short")
	}
	echo := startEcho(t)
	wan, err := chaos.LoadProfile("wan")
	if err != nil {
		t.Fatal(err)
	}
	px := startProxy(t, chaos.UDPProxyOptions{Target: echo.addr(), Profile: wan, Seed: 9})
	var clients []*net.UDPConn
	for range 4 {
		c := dial(t, px)
		_ = c.SetWriteBuffer(4 << 20)
		clients = append(clients, c)
	}
	payload := make([]byte, 200)
	start := time.Now()
	sent := 0
	for time.Since(start) < 500*time.Millisecond {
		for _, c := range clients {
			for range 25 {
				if _, err := c.Write(payload); err == nil {
					sent++
				}
			}
		}
		// Pace to roughly 100k packets/s.
		if ahead := time.Duration(sent)*10*time.Microsecond - time.Since(start); ahead > 0 {
			time.Sleep(ahead)
		}
	}
	el := time.Since(start)
	ok := waitFor(3*time.Second, func() bool {
		st := px.Stats()
		return st.Up.Received == st.Up.Packets+st.Up.Dropped.Total() &&
			st.Down.Received == st.Down.Packets+st.Down.Dropped.Total()
	})
	st := px.Stats()
	t.Logf("offered %d packets in %v (%.0f/s); proxy received %d up, delivered %d up / %d down; drops up %+v down %+v",
		sent, el.Round(time.Millisecond), float64(sent)/el.Seconds(), st.Up.Received, st.Up.Packets, st.Down.Packets, st.Up.Dropped, st.Down.Dropped)
	if !ok {
		t.Errorf("books do not balance: %+v", st)
	}
	if _, ok := ping(clients[0], 0xfffffff0, 2*time.Second); !ok {
		t.Error("no echo after the flood")
	}
}

// BenchmarkUDPEchoDirect is the baseline for BenchmarkUDPProxyNoImpairment:
// the same echo loop without the proxy.
func BenchmarkUDPEchoDirect(b *testing.B) {
	echo := startEcho(b)
	c, err := net.DialUDP("udp", nil, echo.conn.LocalAddr().(*net.UDPAddr))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	echoLoop(b, c, 100)
}

// BenchmarkUDPProxyNoImpairment measures packets per second through the
// proxy: a client keeps a window of datagrams in flight to an echo server
// behind it, so each echo crosses the proxy twice.
func BenchmarkUDPProxyNoImpairment(b *testing.B) {
	for _, size := range []int{100, 1200} {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			echo := startEcho(b)
			px := startProxy(b, chaos.UDPProxyOptions{Target: echo.addr()})
			echoLoop(b, dial(b, px), size)
		})
	}
}

// echoLoop keeps a window of datagrams in flight to an echo server and
// reports packets per second, counting each echo as two packets.
func echoLoop(b *testing.B, c *net.UDPConn, size int) {
	_ = c.SetWriteBuffer(4 << 20)
	_ = c.SetReadBuffer(4 << 20)
	payload := make([]byte, size)
	in := make([]byte, 2048)
	const window = 64
	b.SetBytes(int64(2 * size))
	b.ResetTimer()
	start := time.Now()
	inflight, done, stalls := 0, 0, 0
	for done < b.N {
		for inflight < window && done+inflight < b.N {
			if _, err := c.Write(payload); err != nil {
				b.Fatal(err)
			}
			inflight++
		}
		_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if _, err := c.Read(in); err != nil {
			stalls++ // lost or late: refill the window
			inflight = 0
			continue
		}
		inflight = max(inflight-1, 0)
		done++
	}
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(2*b.N)/el.Seconds(), "pkts/s")
	b.ReportMetric(float64(stalls), "stalls")
}
