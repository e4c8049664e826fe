package mirror_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/config"
	"github.com/meridian-gw/meridian/routing"
	"github.com/meridian-gw/meridian/transport"
	"github.com/meridian-gw/meridian/transport/transporttest"
)

// flooder is a misbehaving sender: a raw session, written by the test,
// that sends batches without waiting for credit.
type flooder struct {
	t    testing.TB
	f    *fixture
	from string // the gateway it claims to be
	leg  string
	addr string
	recs []transport.Record // a batch's records, copied for every batch
	// pace, if not zero, is a pause after each batch sent, so that the
	// in-memory link (which buffers 256 frames) holds few unread: the
	// heap then shows what the receiver holds. Credit is ignored still.
	pace time.Duration
}

// newFlooder returns a flooder posing as gateway from (of region), feeding
// the receiving gateway to's leg of route with batches of about batch raw
// bytes.
func newFlooder(t testing.TB, f *fixture, from, route, to string, batch int) *flooder {
	t.Helper()
	table, err := routing.Compile(f.topo, to)
	if err != nil {
		t.Fatal(err)
	}
	fl := &flooder{t: t, f: f, from: from, addr: table.Gateway.Advertise}
	for _, l := range table.In {
		if l.Route.Name == route {
			fl.leg = l.ID
		}
	}
	if fl.leg == "" {
		t.Fatalf("gateway %s receives no leg of route %s", to, route)
	}
	rng := transporttest.NewRand(7)
	fl.recs = transporttest.JSONRecords(rng, max(1, batch/1000), 1000, 0)
	return fl
}

// dial opens a session and waits for its Resume.
func (fl *flooder) dial(ctx context.Context) (transport.Conn, *transport.Resume, error) {
	conn, err := fl.f.net.Dialer().Dial(ctx, fl.addr, &transport.Hello{
		VersionMin: transport.VersionMin, VersionMax: transport.VersionMax,
		Gateway: fl.from, Region: fl.f.topo.Gateways[fl.from].Region.Name, Legs: []string{fl.leg},
	})
	if err != nil {
		return nil, nil, err
	}
	for {
		fr, err := conn.Recv(ctx)
		if err != nil {
			conn.Close(nil)
			return nil, nil, err
		}
		if rs, ok := fr.(*transport.Resume); ok {
			return conn, rs, nil
		}
	}
}

// batch is a fresh batch (its own record bytes, as a decoded frame has)
// for topic, which is never announced: the receiver holds it while the
// topic would be prepared.
func (fl *flooder) batch(rs *transport.Resume, seq uint64, topic string) *transport.Batch {
	b := &transport.Batch{Leg: fl.leg, Gen: rs.Gen, Seq: seq, Topic: topic, Partition: 0,
		Records: make([]transport.Record, 0, len(fl.recs))}
	off := int64(seq-1) * int64(len(fl.recs))
	for i, r := range fl.recs {
		r.Offset, r.Key, r.Value = off+int64(i), append([]byte(nil), r.Key...), append([]byte(nil), r.Value...)
		b.Records = append(b.Records, r)
	}
	b.NextOffset = off + int64(len(fl.recs))
	b.HighWatermark = b.NextOffset
	return b
}

// flood sends batches ignoring credit and acks until the receiver ends the
// session or n batches are sent, and returns the raw bytes sent and the
// error the session ended with (nil: it did not end).
func (fl *flooder) flood(ctx context.Context, conn transport.Conn, rs *transport.Resume, topic string, n int) (int64, error) {
	var sent int64
	for seq := uint64(1); seq <= uint64(n); seq++ {
		b := fl.batch(rs, seq, topic)
		if err := conn.Send(ctx, b); err != nil {
			return sent, sessionErr(conn, err)
		}
		sent += int64(b.RawSize())
		if fl.pace > 0 {
			time.Sleep(fl.pace)
		}
	}
	select {
	case <-conn.Done():
		return sent, conn.Err()
	case <-time.After(200 * time.Millisecond):
		return sent, nil
	}
}

func sessionErr(conn transport.Conn, err error) error {
	select {
	case <-conn.Done():
		return conn.Err()
	default:
		return err
	}
}

func errCode(err error) uint16 {
	var te *transport.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return 0
}

// A sender that ignores credit loses its session with a protocol error
// once it has more than the window plus one batch unacknowledged (here
// held at the receiver, for a topic never announced), and its redials are
// refused for a second, then accepted again.
func TestSenderThatIgnoresCreditLosesItsSession(t *testing.T) {
	const window = 256 << 10
	f := newFixture(t, []string{"t.a"}, 1)
	f.gateway(t, "gw", window)
	fl := newFlooder(t, f, "ge", "r", "gw", 16<<10)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, rs, err := fl.dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sent, err := fl.flood(ctx, conn, rs, "t.a", 16*window/(16<<10))
	if code := errCode(err); code != transport.ErrCodeProtocol {
		t.Fatalf("after %d bytes sent ignoring a window of %d the session ended with %v, want Error protocol", sent, window, err)
	}
	t.Logf("session ended after %d raw bytes (window %d): %v", sent, window, err)
	if _, _, err := fl.dial(ctx); errCode(err) != transport.ErrCodeLimit {
		t.Fatalf("redial right after the violation: %v, want Error limit (penalty)", err)
	}
	time.Sleep(1100 * time.Millisecond)
	conn, _, err = fl.dial(ctx)
	if err != nil {
		t.Fatalf("redial after the 1 s penalty: %v", err)
	}
	conn.Close(nil)
}

// sampleHeapPeak keeps the highest HeapInuse (after a collection) in
// peak until stop is closed.
func sampleHeapPeak(stop <-chan struct{}, peak *atomic.Uint64) {
	for {
		peak.Store(max(peak.Load(), heapInUse()))
		select {
		case <-stop:
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// The receiver's heap under a flood that ignores credit grows by no more
// than the window plus one batch: the flood (fresh batches for a topic
// never announced, which the receiver would hold up to Tuning.TopicWait)
// is cut off there, whether its batches carry 1 KB records or empty ones
// (which cost their decoded size, not their few raw bytes). Reported:
// HeapInuse growth at the peak and once the flood ended.
//
//	go test -race -count=1 -run TestCreditFloodHeapIsBounded -v ./mirror/
func TestCreditFloodHeapIsBounded(t *testing.T) {
	const (
		window = 4 << 20
		batch  = 64 << 10 // the fixture's MaxBatchBytes
		// The rest of the process: the flooder's few frames not yet read,
		// the batch refused, kfake, the engine, the sampler.
		slack = 3 << 19 // 1.5 MiB
	)
	for _, c := range []struct {
		name    string
		records func() []transport.Record
		batches int // sent at most: 64 MiB of records held, without a window
	}{
		{"1KB-records", func() []transport.Record {
			return transporttest.JSONRecords(transporttest.NewRand(7), 62, 1000, 0)
		}, 1024},
		{"empty-records", func() []transport.Record { return make([]transport.Record, 1000) }, 760},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, []string{"t.a"}, 1)
			f.gateway(t, "gw", window)
			fl := newFlooder(t, f, "ge", "r", "gw", batch)
			fl.recs, fl.pace = c.records(), time.Millisecond
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			conn, rs, err := fl.dial(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(nil)
			time.Sleep(200 * time.Millisecond) // the leg's shards are open
			heapInUse()
			base := heapInUse()
			var peak atomic.Uint64
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Go(func() { sampleHeapPeak(stop, &peak) })
			sent, ferr := fl.flood(ctx, conn, rs, "t.a", c.batches)
			after := heapInUse()
			close(stop)
			wg.Wait()
			grow := func(v uint64) float64 { return (float64(v) - float64(base)) / (1 << 20) }
			t.Logf("flood of %s: %.1f MiB raw sent ignoring a window of %d MiB (session: %v); HeapInuse base %.1f MiB, growth at peak %.2f MiB, after the flood %.2f MiB; bound window+batch = %.2f MiB",
				c.name, float64(sent)/(1<<20), window>>20, ferr, float64(base)/(1<<20), grow(peak.Load()), grow(after), float64(window+batch)/(1<<20))
			if limit := uint64(window + batch + slack); peak.Load() > base+limit || after > base+limit {
				t.Fatalf("receiver heap grew by %.2f MiB at peak, %.2f MiB after the flood: more than window + one batch (%.2f MiB, plus %.1f MiB slack)",
					grow(peak.Load()), grow(after), float64(window+batch)/(1<<20), float64(slack)/(1<<20))
			}
		})
	}
}

// violationSpy counts the sessions a receiver ends with Error protocol.
type violationSpy struct {
	transport.Listener
	n *atomic.Int64
}

func (l violationSpy) Accept(ctx context.Context) (transport.Conn, error) {
	c, err := l.Listener.Accept(ctx)
	if err != nil {
		return nil, err
	}
	return spiedConn{c, l.n}, nil
}

type spiedConn struct {
	transport.Conn
	n *atomic.Int64
}

func (c spiedConn) Close(err error) error {
	if errCode(err) == transport.ErrCodeProtocol {
		c.n.Add(1)
	}
	return c.Conn.Close(err)
}

// A well-behaved sender of many tiny batches (one-byte records trickling
// into many partitions, each fetch its own batch) never trips the
// receiver's window, small as it is: both sides charge a batch at least
// minBatchCost. The mirror is exact.
func TestManyTinyBatchesNeverTripTheWindow(t *testing.T) {
	const window = 2 << 10 // eight batches at the minimum cost
	f := newFixture(t, []string{"t.a", "t.b"}, 8)
	var violations atomic.Int64
	f.wrapListener = func(ln transport.Listener) transport.Listener { return violationSpy{ln, &violations} }
	f.gateway(t, "gw", window)
	f.gateway(t, "ge", 0)
	cl, err := kgo.NewClient(kgo.SeedBrokers(f.src.ListenAddrs()...), kgo.ProducerLinger(0),
		kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const n = 4000
	for i := range n {
		r := &kgo.Record{Topic: f.topics[i%2], Value: []byte{byte(i)}}
		if err := cl.ProduceSync(context.Background(), r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	checkExact(t, f.waitMirrored(t, n, 60*time.Second), n)
	if v := violations.Load(); v != 0 {
		t.Fatalf("the receiver ended %d sessions of a well-behaved sender for a protocol violation", v)
	}
}

// lagProbe produces to topic at a steady rate and reads the destination,
// recording each record's lag (read-back time minus its timestamp) and
// checking that it arrives exactly once and in order.
type lagProbe struct {
	mu    sync.Mutex
	lags  []time.Duration
	next  map[int32]int64 // the next value expected per partition
	fault string
	count int
}

// TestOtherLegsKeepFlowingDuringAFlood: while one site (north) floods the
// receiver with credit-ignoring batches, redialling whenever it is cut off
// (and refused while penalised), another site's leg (east) keeps flowing:
// its records, produced at a steady rate, are read back from the
// destination exactly (no loss, duplicate or reordering), and their lag
// (read-back time minus produce timestamp) stays under 1 s at p99 and max.
//
//	go test -race -count=1 -run TestOtherLegsKeepFlowingDuringAFlood -v ./mirror/
func TestOtherLegsKeepFlowingDuringAFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("about 12 s")
	}
	f := newFixture(t, []string{"t.a"}, 2, func(c *config.File) {
		c.Regions = append(c.Regions, config.Region{Name: "north",
			Clusters: c.Regions[0].Clusters,
			Gateways: []config.Gateway{{Name: "gn", Listen: "gn:1", TLS: c.Regions[0].Gateways[0].TLS}}})
		c.Links = append(c.Links, config.Link{Name: "north--west", Between: []string{"north", "west"}, Profile: "lan", Compression: "zstd"})
		r := c.Routes[0]
		r.Name, r.From, r.Topics = "r2", "north/kafka", config.TopicFilter{Include: []string{`^n\.`}}
		c.Routes = append(c.Routes, r)
	})
	f.gateway(t, "gw", 4<<20)
	f.gateway(t, "ge", 0)
	fl := newFlooder(t, f, "gn", "r2", "gw", 62<<10)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	probe := &lagProbe{next: map[int32]int64{}}
	const (
		run  = 10 * time.Second
		rate = 200 // records per second
	)
	var produced atomic.Int64
	wg.Go(func() { probe.read(ctx, t, f) })
	time.Sleep(time.Second) // the leg is open and the reader is at the end
	var floodSessions, floodRefused, floodBytes atomic.Int64
	wg.Go(func() {
		for ctx.Err() == nil {
			conn, rs, err := fl.dial(ctx)
			if err != nil {
				floodRefused.Add(1)
				time.Sleep(50 * time.Millisecond)
				continue
			}
			floodSessions.Add(1)
			n, _ := fl.flood(ctx, conn, rs, "n.a", 2048) // 128 MiB: without a window, the test's bound
			floodBytes.Add(n)
			conn.Close(nil)
		}
	})
	wg.Go(func() { produced.Store(int64(probe.produce(ctx, t, f, "t.a", rate, run))) })
	deadline := time.Now().Add(run + 30*time.Second)
	for time.Sleep(200 * time.Millisecond); ; time.Sleep(200 * time.Millisecond) {
		probe.mu.Lock()
		done, fault := produced.Load() > 0 && int64(probe.count) >= produced.Load(), probe.fault
		probe.mu.Unlock()
		if done || fault != "" || time.Now().After(deadline) {
			break
		}
	}
	cancel()
	wg.Wait()
	probe.mu.Lock()
	defer probe.mu.Unlock()
	if probe.fault != "" {
		t.Fatal(probe.fault)
	}
	if int64(probe.count) != produced.Load() {
		t.Fatalf("read back %d of %d records produced", probe.count, produced.Load())
	}
	slices.Sort(probe.lags)
	p99, most := probe.lags[len(probe.lags)*99/100], probe.lags[len(probe.lags)-1]
	t.Logf("east leg during the flood: %d records exact, lag p50 %v p99 %v max %v; flooder: %d sessions, %d refused dials, %.1f MiB sent",
		probe.count, probe.lags[len(probe.lags)/2], p99, most, floodSessions.Load(), floodRefused.Load(), float64(floodBytes.Load())/(1<<20))
	if p99 >= time.Second || most >= time.Second {
		t.Fatalf("east leg lag during the flood: p99 %v, max %v, want both under 1 s", p99, most)
	}
}

// produce writes records to topic at rate per second for d, each value its
// sequence number per partition, and returns how many it wrote.
func (p *lagProbe) produce(ctx context.Context, t *testing.T, f *fixture, topic string, rate int, d time.Duration) int {
	cl, err := kgo.NewClient(kgo.SeedBrokers(f.src.ListenAddrs()...), kgo.ProducerLinger(0),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Error(err)
		return 0
	}
	defer cl.Close()
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	n := 0
	seq := map[int32]int64{}
	for end := time.Now().Add(d); time.Now().Before(end); {
		select {
		case <-ctx.Done():
			return n
		case <-tick.C:
		}
		part := int32(rand.IntN(2))
		r := &kgo.Record{Topic: topic, Partition: part, Value: []byte{byte(seq[part] >> 8), byte(seq[part])}, Timestamp: time.Now()}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Error(err)
			return n
		}
		seq[part]++
		n++
	}
	return n
}

// read consumes topic at the destination from the end until ctx ends.
func (p *lagProbe) read(ctx context.Context, t *testing.T, f *fixture) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(f.dst.ListenAddrs()...), kgo.ConsumeTopics("t.a"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(50*time.Millisecond),
		kgo.MetadataMinAge(100*time.Millisecond), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Error(err)
		return
	}
	defer cl.Close()
	for ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		now := time.Now()
		p.mu.Lock()
		fs.EachRecord(func(r *kgo.Record) {
			v := int64(r.Value[0])<<8 | int64(r.Value[1])
			if want := p.next[r.Partition]; v != want && p.fault == "" {
				p.fault = fmt.Sprintf("partition %d: read record %d, want %d (lost, duplicated or reordered)", r.Partition, v, want)
			}
			p.next[r.Partition] = v + 1
			p.lags = append(p.lags, now.Sub(r.Timestamp))
			p.count++
		})
		p.mu.Unlock()
	}
}

// garbageListener hands over sessions whose first Recv fails as the
// transport's does when the peer sends a frame that does not decode.
type garbageListener struct{ transport.Listener }

func (l garbageListener) Accept(ctx context.Context) (transport.Conn, error) {
	c, err := l.Listener.Accept(ctx)
	if err != nil {
		return nil, err
	}
	return &garbageConn{Conn: c}, nil
}

type garbageConn struct {
	transport.Conn
	once sync.Once
}

func (c *garbageConn) Recv(ctx context.Context) (transport.Frame, error) {
	var garbage bool
	c.once.Do(func() { garbage = true })
	if garbage {
		return nil, fmt.Errorf("batch lane: %w: unknown frame type 0xee", transport.ErrMalformed)
	}
	return c.Conn.Recv(ctx)
}

// A peer whose frames do not decode is penalised like one that ignores
// credit: its session ends with Error protocol and its redial is refused.
func TestMalformedFramesArePenalised(t *testing.T) {
	f := newFixture(t, []string{"t.a"}, 1)
	f.wrapListener = func(ln transport.Listener) transport.Listener { return garbageListener{ln} }
	f.gateway(t, "gw", 0)
	fl := newFlooder(t, f, "ge", "r", "gw", 1<<10)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := f.net.Dialer().Dial(ctx, fl.addr, &transport.Hello{
		VersionMin: transport.VersionMin, VersionMax: transport.VersionMax, Gateway: "ge", Region: "east", Legs: []string{fl.leg}})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-conn.Done():
	case <-ctx.Done():
		t.Fatal("the session of a peer sending garbage did not end")
	}
	if errCode(conn.Err()) != transport.ErrCodeProtocol {
		t.Fatalf("session ended with %v, want Error protocol", conn.Err())
	}
	if _, _, err := fl.dial(ctx); errCode(err) != transport.ErrCodeLimit {
		t.Fatalf("redial after garbage: %v, want Error limit (penalty)", err)
	}
}
