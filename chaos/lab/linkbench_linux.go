package lab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/chaos"
	"github.com/meridian-gw/meridian/chaos/netlab"
	"github.com/meridian-gw/meridian/config"
	"github.com/meridian-gw/meridian/internal/gateway"
	"github.com/meridian-gw/meridian/internal/kread"
	"github.com/meridian-gw/meridian/internal/pki"
	"github.com/meridian-gw/meridian/internal/verify"
	"github.com/meridian-gw/meridian/topology"
	"github.com/meridian-gw/meridian/topology/profile"
)

// Contenders of the link benchmark.
const (
	ContenderMeridian = "meridian"
	// ContenderTCP is the MirrorMaker 2 pattern: a franz-go consumer at the
	// destination fetches from the remote cluster over TCP, across the
	// emulated link, and produces locally.
	ContenderTCP = "tcp"
)

// LinkBenchOptions configure RunLinkBench. Zero values take the defaults.
type LinkBenchOptions struct {
	// Profile is the link between the regions edge (the source, the dialing
	// side: Up) and hq. Required.
	Profile *chaos.Profile
	// Duration is the measured time per contender after Warmup; zero: 60 s.
	// Warmup is left out of the goodput (connection set-up, slow start);
	// zero: 10 s.
	Duration, Warmup time.Duration
	// ValueSize is the size of each record's value; zero: 1,000 bytes.
	ValueSize int
	// JSON makes values JSON telemetry events (compressible) instead of
	// random bytes (incompressible, the default: goodput then says how full
	// the link is kept, not how well the data compresses).
	JSON bool
	// Compression is meridian's link codec; "": zstd.
	Compression string
	// Topics and Partitions of the source; zero: 2 and 4.
	Topics     int
	Partitions int32
	// Contenders to run, in order; nil: meridian, then tcp.
	Contenders []string
	// BlackoutAt and Blackout, if Blackout > 0, black the link out for that
	// long at that time after the contender starts; the result says how
	// soon records flowed again after the link returned.
	BlackoutAt, Blackout time.Duration
	// TCPCongestion is the TCP congestion control in the lab (both
	// regions), which is what the tcp contender's bulk data (fetch
	// responses from the edge broker) runs under. "": cubic, Linux's
	// default and what a MirrorMaker 2 deployment gets unless tuned.
	TCPCongestion string
	// Kafka is what runs in each region: "kfake" (in process; "" too) or
	// "real" (an Apache Kafka broker from internal/kafkatest, its JVM in
	// the region's namespace, listening on the region's lab address). The
	// mm2 contender needs "real".
	Kafka string
	// KafkaTuned applies, with real Kafka, what Kafka's documentation
	// advises for high-latency links: socket buffers left to the kernel's
	// autotuning (-1) at both brokers and in MirrorMaker's clients (their
	// defaults of 64-128 KB cap one connection near 1 Mbit/s at 600 ms),
	// and longer request timeouts in MirrorMaker's clients.
	KafkaTuned bool
	// MM2Config holds mm2.properties entries for the mm2 contender over
	// the defaults (and the tuning). nil: none.
	MM2Config map[string]string
	// Seed of the lab's impairments; zero picks one.
	Seed   uint64
	Logger *slog.Logger
	// Progress, if not nil, receives a line now and then.
	Progress func(string)
}

// LinkResult is one contender's run.
type LinkResult struct {
	Contender string `json:"contender"`
	// GoodputBits is source bytes (key + value) delivered per second, in
	// bit/s, over the measured window, counted by reading the destination.
	GoodputBits float64 `json:"goodput_bps"`
	// LinkShare is GoodputBits over the link's rate.
	LinkShare float64 `json:"link_share"`
	// WireBits is what crossed the link from edge to hq (whole IP packets)
	// per second over the same window.
	WireBits float64 `json:"wire_bps"`
	// Records and Bytes delivered in the measured window.
	Records int64 `json:"records"`
	Bytes   int64 `json:"bytes"`
	// FirstRecord is when the first record reached the destination.
	FirstRecord float64 `json:"first_record_s"`
	// LongestStall is the longest time, after the first record, that
	// nothing reached the destination outside a blackout.
	LongestStall   float64 `json:"longest_stall_s"`
	LongestStallAt float64 `json:"longest_stall_at_s"` // when it began, from the start
	// Recovery is how long after a blackout ended records flowed again
	// (with LinkBenchOptions.Blackout).
	Recovery float64 `json:"recovery_s,omitempty"`
	// Exact: every destination partition holds exactly the first records of
	// its source partition, in order, none twice, none altered.
	Exact bool   `json:"exact"`
	Error string `json:"error,omitempty"`
}

// LinkReport is RunLinkBench's outcome.
type LinkReport struct {
	Profile   string        `json:"profile"`
	LinkBits  float64       `json:"link_bps"` // the link's rate edge→hq, bit/s
	RTT       float64       `json:"rtt_s"`
	Loss      float64       `json:"loss"` // mean random and bursty loss edge→hq
	Payload   string        `json:"payload"`
	Kafka     string        `json:"kafka"`
	TCPCC     string        `json:"tcp_congestion_control"`
	Duration  float64       `json:"duration_s"`
	Results   []*LinkResult `json:"results"`
	Advantage float64       `json:"meridian_over_tcp,omitempty"` // goodput ratio
	// AdvantageMM2 is meridian's goodput over real MirrorMaker 2's.
	AdvantageMM2 float64 `json:"meridian_over_mm2,omitempty"`
}

// RunLinkBench runs each contender in a fresh packet lab (network
// namespaces edge and hq joined by the profile's link, a kfake cluster in
// each) and measures how much of the link it turns into delivered records.
func RunLinkBench(ctx context.Context, o LinkBenchOptions) (*LinkReport, error) {
	if o.Profile == nil {
		return nil, errors.New("link bench: no profile")
	}
	if err := netlab.Check(); err != nil {
		return nil, fmt.Errorf("link bench: %w", err)
	}
	if o.Duration == 0 {
		o.Duration = 60 * time.Second
	}
	if o.Warmup == 0 {
		o.Warmup = 10 * time.Second
	}
	if o.ValueSize == 0 {
		o.ValueSize = 1000
	}
	if o.Topics == 0 {
		o.Topics = 2
	}
	if o.Partitions == 0 {
		o.Partitions = 4
	}
	if o.Contenders == nil {
		o.Contenders = []string{ContenderMeridian, ContenderTCP}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.TCPCongestion == "" {
		o.TCPCongestion = "cubic"
	}
	if o.Progress == nil {
		o.Progress = func(string) {}
	}
	up := o.Profile.Params(chaos.Up)
	rep := &LinkReport{Profile: o.Profile.Name, LinkBits: float64(up.Rate), RTT: o.Profile.RTT().Seconds(),
		Loss: up.MeanLoss(), Payload: "random", Duration: o.Duration.Seconds(), TCPCC: o.TCPCongestion}
	if o.JSON {
		rep.Payload = "json"
	}
	if o.Kafka == "" {
		o.Kafka = "kfake"
	}
	if o.Kafka != "kfake" && o.Kafka != "real" {
		return nil, fmt.Errorf("link bench: kafka %q: want kfake or real", o.Kafka)
	}
	rep.Kafka = o.Kafka
	for _, c := range o.Contenders {
		if c != ContenderMeridian && c != ContenderTCP && c != ContenderMM2 {
			return nil, fmt.Errorf("link bench: unknown contender %q (meridian, tcp, mm2)", c)
		}
		if c == ContenderMM2 && o.Kafka != "real" {
			return nil, errors.New("link bench: the mm2 contender needs real Kafka")
		}
	}
	for _, c := range o.Contenders {
		r, err := runLinkContender(ctx, o, c)
		if err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			r = &LinkResult{Contender: c, Error: err.Error()}
		}
		if rep.LinkBits > 0 {
			r.LinkShare = r.GoodputBits / rep.LinkBits
		}
		rep.Results = append(rep.Results, r)
		o.Progress(fmt.Sprintf("%s: goodput %.2f Mbit/s (%.0f%% of the link), wire %.2f Mbit/s, longest stall %.2f s at %.1f s, exact %v",
			c, r.GoodputBits/1e6, 100*r.LinkShare, r.WireBits/1e6, r.LongestStall, r.LongestStallAt, r.Exact))
	}
	var m, t, mm *LinkResult
	for _, r := range rep.Results {
		switch r.Contender {
		case ContenderMeridian:
			m = r
		case ContenderTCP:
			t = r
		case ContenderMM2:
			mm = r
		}
	}
	if m != nil && t != nil && t.GoodputBits > 0 {
		rep.Advantage = m.GoodputBits / t.GoodputBits
	}
	if m != nil && mm != nil && mm.GoodputBits > 0 {
		rep.AdvantageMM2 = m.GoodputBits / mm.GoodputBits
	}
	return rep, nil
}

// linkEnv is one contender's lab: namespaces, clusters, topics.
type linkEnv struct {
	o        LinkBenchOptions
	lab      *netlab.Lab
	edge, hq linkCluster
	topics   []string
	realDir  string // with real Kafka: the brokers' and MirrorMaker's directories
}

// linkCluster is a region's Kafka: kfake, or a real broker (realCluster).
type linkCluster interface {
	ListenAddrs() []string
	Close()
}

func (e *linkEnv) close() {
	if e.edge != nil {
		e.edge.Close()
	}
	if e.hq != nil {
		e.hq.Close()
	}
	if e.lab != nil {
		e.lab.Close()
	}
	if e.realDir != "" {
		os.RemoveAll(e.realDir)
	}
}

// clientOpts reach a cluster from inside a region.
func (e *linkEnv) clientOpts(c linkCluster, region string) []kgo.Opt {
	return []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...), kgo.Dialer(e.lab.DialContext(region))}
}

func newLinkEnv(o LinkBenchOptions) (e *linkEnv, err error) {
	env := &linkEnv{o: o}
	e = env
	defer func() {
		if err != nil {
			env.close()
		}
	}()
	if e.lab, err = netlab.New(netlab.Options{Regions: []string{"edge", "hq"}, Profile: o.Profile, Seed: o.Seed, TCPCongestion: o.TCPCongestion,
		Logger: o.Logger}); err != nil {
		return nil, err
	}
	for i := range o.Topics {
		e.topics = append(e.topics, fmt.Sprintf("link.%d", i))
	}
	if o.Kafka == "real" {
		if err := e.startRealKafka(); err != nil {
			return nil, err
		}
		return e, nil
	}
	listenIn := func(region string) kfake.Opt {
		addr := e.lab.Addr(region).String() + ":0"
		return kfake.ListenFn(func(network, _ string) (net.Listener, error) { return e.lab.Listen(region, network, addr) })
	}
	edge, err := kfake.NewCluster(kfake.NumBrokers(1), listenIn("edge"), kfake.SeedTopics(o.Partitions, e.topics...))
	if err != nil {
		return nil, fmt.Errorf("edge cluster: %w", err)
	}
	e.edge = edge
	hq, err := kfake.NewCluster(kfake.NumBrokers(1), listenIn("hq"))
	if err != nil {
		return nil, fmt.Errorf("hq cluster: %w", err)
	}
	e.hq = hq
	return e, nil
}

// fill produces enough records at the edge that the contender never runs
// dry: the link's rate over the whole run, times the compression the data
// allows, with a margin.
func (e *linkEnv) fill(ctx context.Context) error {
	rate := float64(e.o.Profile.Params(chaos.Up).Rate) / 8
	if rate <= 0 {
		rate = 125e6 // no limit: assume a gigabit
	}
	bytes := rate * (e.o.Duration + e.o.Warmup).Seconds() * 1.5
	if e.o.JSON {
		bytes *= 6
	}
	n := min(int64(bytes)/int64(e.o.ValueSize+16)+1000, 3_000_000)
	cl, err := kgo.NewClient(append(e.clientOpts(e.edge, "edge"), kgo.ProducerLinger(5*time.Millisecond), kgo.MaxBufferedRecords(100_000))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	var (
		wg   sync.WaitGroup
		once sync.Once
		perr error
	)
	if e.o.JSON {
		p := &Producer{cl: cl, topics: e.topics, size: e.o.ValueSize, rng: mrand.New(mrand.NewPCG(1, 7))}
		for i := range n {
			r := p.event(i)
			wg.Add(1)
			cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
				if err != nil {
					once.Do(func() { perr = err })
				}
				wg.Done()
			})
		}
	} else {
		// Random values: incompressible, whatever codec sees them.
		rng := mrand.NewChaCha8([32]byte{7})
		for i := range n {
			v := make([]byte, e.o.ValueSize)
			rng.Read(v)
			r := &kgo.Record{Topic: e.topics[int(i)%len(e.topics)], Key: fmt.Appendf(nil, "k%08d", i), Value: v}
			wg.Add(1)
			cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
				if err != nil {
					once.Do(func() { perr = err })
				}
				wg.Done()
			})
		}
	}
	wg.Wait()
	return perr
}

// delivery is a time series of records reaching the destination.
type delivery struct {
	mu    sync.Mutex
	at    []time.Time
	bytes []int64 // cumulative
	total int64
}

func (d *delivery) add(t time.Time, b int64) {
	d.mu.Lock()
	d.total += b
	d.at = append(d.at, t)
	d.bytes = append(d.bytes, d.total)
	d.mu.Unlock()
}

// tail counts, by arrival, the records of the destination topics (read
// committed), until ctx ends.
func (e *linkEnv) tail(ctx context.Context, d *delivery) error {
	cl, err := kgo.NewClient(append(e.clientOpts(e.hq, "hq"), kgo.ConsumeTopics(e.topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(50*time.Millisecond), kgo.MetadataMinAge(100*time.Millisecond), kgo.MetadataMaxAge(500*time.Millisecond))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	for ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		now := time.Now()
		fs.EachRecord(func(r *kgo.Record) { d.add(now, int64(len(r.Key)+len(r.Value))) })
	}
	return nil
}

func runLinkContender(ctx context.Context, o LinkBenchOptions, contender string) (*LinkResult, error) {
	e, err := newLinkEnv(o)
	if err != nil {
		return nil, err
	}
	defer e.close()
	o.Progress(fmt.Sprintf("%s: filling the edge cluster", contender))
	if err := e.fill(ctx); err != nil {
		return nil, fmt.Errorf("fill the edge cluster: %w", err)
	}
	link := e.lab.Link("edge", "hq")
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var runErr atomic.Pointer[error]
	fail := func(err error) {
		if err != nil && rctx.Err() == nil {
			runErr.CompareAndSwap(nil, &err)
			cancel()
		}
	}
	d := &delivery{}
	wg.Go(func() { fail(e.tail(rctx, d)) })
	start := time.Now()
	o.Progress(fmt.Sprintf("%s: running for %v", contender, o.Warmup+o.Duration))
	switch contender {
	case ContenderMeridian:
		wg.Go(func() { fail(e.runMeridian(rctx)) })
	case ContenderTCP:
		wg.Go(func() { fail(e.runTCP(rctx)) })
	case ContenderMM2:
		wg.Go(func() { fail(e.runMM2(rctx)) })
	}
	var blackoutEnd time.Time
	if o.Blackout > 0 {
		wg.Go(func() {
			select {
			case <-rctx.Done():
				return
			case <-time.After(o.BlackoutAt):
			}
			link.Blackout(o.Blackout)
		})
		blackoutEnd = start.Add(o.BlackoutAt + o.Blackout)
	}
	var w0, w1 chaos.DirStats
	select {
	case <-rctx.Done():
	case <-time.After(o.Warmup):
	}
	w0 = link.Stats().Up
	d.mu.Lock()
	b0 := d.total
	n0 := len(d.at)
	d.mu.Unlock()
	t0 := time.Now()
	select {
	case <-rctx.Done():
	case <-time.After(o.Duration):
	}
	w1 = link.Stats().Up
	t1 := time.Now()
	d.mu.Lock()
	b1, n1 := d.total, len(d.at)
	at := slices.Clone(d.at)
	d.mu.Unlock()
	cancel()
	wg.Wait()
	if p := runErr.Load(); p != nil {
		return nil, *p
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	secs := t1.Sub(t0).Seconds()
	r := &LinkResult{Contender: contender, Records: int64(n1 - n0), Bytes: b1 - b0,
		GoodputBits: float64(b1-b0) * 8 / secs, WireBits: float64(w1.Bytes-w0.Bytes) * 8 / secs}
	if len(at) > 0 {
		r.FirstRecord = at[0].Sub(start).Seconds()
		prev := at[0]
		for _, t := range append(at[1:], t1) {
			gap := t.Sub(prev)
			if o.Blackout > 0 && !prev.After(blackoutEnd) && !t.Before(blackoutEnd.Add(-o.Blackout)) {
				// The gap spans the blackout: what counts is the time
				// from the link's return to the next record.
				if rec := t.Sub(blackoutEnd).Seconds(); t.After(blackoutEnd) && r.Recovery == 0 {
					r.Recovery = rec
				}
				gap = max(0, t.Sub(blackoutEnd))
			}
			if gap.Seconds() > r.LongestStall {
				r.LongestStall, r.LongestStallAt = gap.Seconds(), prev.Sub(start).Seconds()
			}
			prev = t
		}
	}
	vctx, vcancel := context.WithTimeout(ctx, 2*time.Minute)
	defer vcancel()
	exact, err := e.prefixExact(vctx)
	if err != nil {
		return nil, fmt.Errorf("read back: %w", err)
	}
	r.Exact = exact
	return r, nil
}

// prefixExact reads both clusters back: each destination partition must
// hold its source partition's first records, in order, exactly.
func (e *linkEnv) prefixExact(ctx context.Context) (bool, error) {
	type key struct {
		t string
		p int32
	}
	read := func(opts []kgo.Opt) (map[key][]uint64, error) {
		out := map[key][]uint64{}
		err := kread.Each(ctx, opts, e.topics, func(r *kgo.Record) {
			k := key{r.Topic, r.Partition}
			out[k] = append(out[k], verify.Fingerprint(r))
		})
		return out, err
	}
	src, err := read(e.clientOpts(e.edge, "edge"))
	if err != nil {
		return false, err
	}
	dst, err := read(e.clientOpts(e.hq, "hq"))
	if err != nil {
		return false, err
	}
	for k, d := range dst {
		s := src[k]
		if len(d) > len(s) || !slices.Equal(d, s[:len(d)]) {
			return false, nil
		}
	}
	return true, nil
}

// runMeridian runs the two gateways until ctx ends: edge-a in the edge
// namespace reads the edge cluster and dials hq-a in the hq namespace,
// which writes the hq cluster.
func (e *linkEnv) runMeridian(ctx context.Context) error {
	ca, err := pki.NewCA("meridian-linkbench", 24*time.Hour)
	if err != nil {
		return err
	}
	hqLink := e.lab.Addr("hq").String() + ":7400"
	codec := e.o.Compression
	if codec == "" {
		codec = "zstd"
	}
	f := &config.File{
		Version: 1,
		Regions: []config.Region{
			{Name: "edge", Clusters: []config.Cluster{{Name: "kafka", Kind: "kafka", Bootstrap: e.edge.ListenAddrs()}},
				Gateways: []config.Gateway{{Name: EdgeGateway, Listen: e.lab.Addr("edge").String() + ":7400"}}},
			{Name: "hq", Clusters: []config.Cluster{{Name: "kafka", Kind: "kafka", Bootstrap: e.hq.ListenAddrs()}},
				Gateways: []config.Gateway{{Name: HQGateway, Listen: hqLink}}},
		},
		Links: []config.Link{{Name: "edge--hq", Between: []string{"edge", "hq"}, Transport: "quic", Profile: e.o.Profile.Name, Compression: codec}},
		Routes: []config.Route{{Name: "mirror", From: "edge/kafka", To: []string{"hq/kafka"},
			Topics: config.TopicFilter{Include: []string{`^link\.`}}, Rename: "{topic}", StartAt: "earliest", Discover: time.Second}},
	}
	topo, err := topology.New(f)
	if err != nil {
		return err
	}
	regionOf := map[string]string{EdgeGateway: "edge", HQGateway: "hq"}
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	gctx, cancel := context.WithCancel(ctx)
	defer func() { cancel(); wg.Wait() }()
	for _, name := range []string{HQGateway, EdgeGateway} {
		cert, err := ca.Issue(name, nil)
		if err != nil {
			return err
		}
		region := regionOf[name]
		gw, err := gateway.New(gateway.Options{
			Topology: topo, Name: name, Logger: e.o.Logger,
			ServerTLS: ca.ServerConfig(cert), ClientTLS: ca.ClientConfig(cert, ""), AdminAddr: "-",
			// Tuned for the link the lab emulates, overrides included.
			Profile: func(string) (*profile.Profile, error) { return e.o.Profile, nil },
			ClusterOpts: func(c *topology.Cluster) ([]kgo.Opt, error) {
				return []kgo.Opt{kgo.SeedBrokers(c.Bootstrap...), kgo.Dialer(e.lab.DialContext(c.Region.Name))}, nil
			},
			ListenPacket: func(addr string) (net.PacketConn, error) { return e.lab.ListenPacket(region, "udp", addr) },
			DialPacket: func() (net.PacketConn, error) {
				return e.lab.ListenPacket(region, "udp", e.lab.Addr(region).String()+":0")
			},
		})
		if err != nil {
			return err
		}
		wg.Go(func() {
			if err := gw.Run(gctx); err != nil && gctx.Err() == nil {
				errs <- fmt.Errorf("%s: %w", name, err)
			}
		})
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-errs:
		return err
	}
}

// runTCP is the MirrorMaker 2 pattern: in the hq namespace, a consumer
// fetches from the edge cluster across the link and a producer writes to
// the local cluster, same partition.
func (e *linkEnv) runTCP(ctx context.Context) error {
	dst, err := kgo.NewClient(append(e.clientOpts(e.hq, "hq"), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(0))...)
	if err != nil {
		return err
	}
	defer dst.Close()
	for _, t := range e.topics {
		if _, err := kadm.NewClient(dst).CreateTopic(ctx, e.o.Partitions, 1, nil, t); err != nil {
			return err
		}
	}
	src, err := kgo.NewClient(append(e.clientOpts(e.edge, "hq"), kgo.ConsumeTopics(e.topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))...)
	if err != nil {
		return err
	}
	defer src.Close()
	var perr atomic.Pointer[error]
	for ctx.Err() == nil {
		fs := src.PollFetches(ctx)
		if ctx.Err() != nil {
			break
		}
		fs.EachError(func(t string, p int32, err error) {
			e.o.Logger.Debug("tcp baseline fetch", "topic", t, "partition", p, "err", err)
		})
		fs.EachRecord(func(r *kgo.Record) {
			out := &kgo.Record{Topic: r.Topic, Partition: r.Partition, Key: r.Key, Value: r.Value, Headers: r.Headers, Timestamp: r.Timestamp}
			dst.Produce(ctx, out, func(_ *kgo.Record, err error) {
				if err != nil && ctx.Err() == nil {
					perr.CompareAndSwap(nil, &err)
				}
			})
		})
		if p := perr.Load(); p != nil {
			return *p
		}
	}
	return nil
}
