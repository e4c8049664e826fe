package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/config"
	"github.com/meridian-gw/meridian/internal/kafkatest"
	"github.com/meridian-gw/meridian/internal/verify"
)

// Contenders of the MirrorMaker 2 benchmark.
const (
	ContenderRecords     = "meridian-records"     // meridian, record mode
	ContenderPassthrough = "meridian-passthrough" // meridian, Kafka batches as they are
	ContenderMM2         = "mm2"                  // Apache MirrorMaker 2, dedicated mode
)

// FullJIT are the java arguments the benchmarks give brokers and
// MirrorMaker 2: the harness's C1-only default starts faster but runs
// slower, which would handicap the JVMs against the Go contenders.
var FullJIT = []string{"-XX:TieredStopAtLevel=4"}

// MM2BenchOptions configure RunMM2Bench. Zero values take the defaults.
type MM2BenchOptions struct {
	Records     int64  // per run; zero: 200,000
	ValueSize   int    // pad values to about this many bytes; zero: natural JSON events (~200-350 B)
	Topics      int    // zero: 3
	Partitions  int32  // per topic; zero: 4
	Compression string // meridian's link codec; "": zstd
	Runs        int    // zero: 1
	// Contenders, in the order of the first run (later runs rotate it);
	// nil: meridian-records, meridian-passthrough, mm2; empty: no
	// throughput runs (only Offsets and Sync).
	Contenders []string
	// MM2Config holds mm2.properties entries over kafkatest.MM2Config's
	// defaults (tasks.max, producer or consumer tuning). nil: none.
	MM2Config map[string]string
	// MM2Heap is MirrorMaker 2's -Xmx; "": 512m.
	MM2Heap string
	// Offsets runs the offsets row after the throughput runs: how many
	// records a consumer group re-reads or skips after a planned failover,
	// at each of Lags (nil: 0, 1,000 and 100,000 records).
	Offsets bool
	Lags    []int64
	// Sync measures how soon a new matching topic appears at the
	// destination and the p50/p99 lag of group offset sync.
	Sync bool
	// Dir holds the clusters' and MirrorMaker's directories, kept after
	// the run; "": a temporary directory, removed afterwards.
	Dir    string
	Logger *slog.Logger
	Out    io.Writer // progress lines; nil: none
}

// ContenderRun is one contender's figures in one run.
type ContenderRun struct {
	Contender string  `json:"contender"`
	Figures   Figures `json:"figures"`
	// JVMCPUSeconds is CPU time of the JVMs during the run: the two brokers
	// and, for mm2, MirrorMaker itself (MM2CPUSeconds). Figures.CPUSeconds
	// is this process's (meridian's gateways run in it).
	BrokerCPUSeconds float64 `json:"broker_cpu_seconds"`
	MM2CPUSeconds    float64 `json:"mm2_cpu_seconds,omitempty"`
	MM2RSSMB         float64 `json:"mm2_rss_mb,omitempty"`
	// Exact: the destination holds every source record once, in order
	// (verify.Compare); Report says what was found if not.
	Exact  bool   `json:"exact"`
	Report string `json:"report"`
}

// MM2BenchResult is RunMM2Bench's outcome.
type MM2BenchResult struct {
	Records     int64  `json:"records"`
	Bytes       int64  `json:"bytes"`
	Compression string `json:"compression"`
	// Runs[i] holds run i's contenders in the order they ran.
	Runs [][]ContenderRun `json:"runs"`
	// Median figures per contender, and the median per-run ratios of each
	// meridian mode over mm2 (end to end; steady state).
	Median      map[string]Figures `json:"median"`
	Ratio       map[string]float64 `json:"ratio_over_mm2"`
	SteadyRatio map[string]float64 `json:"steady_ratio_over_mm2"`
	Offsets     []OffsetRow        `json:"offsets,omitempty"`
	// FailoverSeconds is how long meridian's planned failover took in the
	// offsets row (drain, fence, final group sync).
	FailoverSeconds float64     `json:"failover_seconds,omitempty"`
	Sync            *SyncResult `json:"sync,omitempty"`
	Load            string      `json:"load"` // /proc/loadavg at the start
}

// RunMM2Bench starts two real Apache Kafka clusters (internal/kafkatest,
// full JIT) and, in each run, fills fresh source topics with the same
// records and mirrors them with each contender in turn into its own
// destination topics: meridian in record mode and in passthrough (two
// gateways in this process over loopback QUIC, exactly once), and Apache
// MirrorMaker 2 in dedicated mode (at least once, its default). Each is
// timed from its start until the destination holds every record, then read
// back. Optionally the offsets row and the sync figures follow.
func RunMM2Bench(ctx context.Context, o MM2BenchOptions) (res *MM2BenchResult, err error) {
	if o.Records == 0 {
		o.Records = 200_000
	}
	if o.Topics == 0 {
		o.Topics = 3
	}
	if o.Partitions == 0 {
		o.Partitions = 4
	}
	if o.Compression == "" {
		o.Compression = "zstd"
	}
	if o.Runs == 0 {
		o.Runs = 1
	}
	if o.Contenders == nil {
		o.Contenders = []string{ContenderRecords, ContenderPassthrough, ContenderMM2}
	}
	for _, c := range o.Contenders {
		if c != ContenderRecords && c != ContenderPassthrough && c != ContenderMM2 {
			return nil, fmt.Errorf("unknown contender %q (%s, %s, %s)", c, ContenderRecords, ContenderPassthrough, ContenderMM2)
		}
	}
	if o.Lags == nil {
		o.Lags = []int64{0, 1000, 100_000}
	}
	if o.MM2Heap == "" {
		o.MM2Heap = "512m"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	env, err := startMM2Env(o)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, env.close()) }()

	res = &MM2BenchResult{Records: o.Records, Compression: o.Compression, Load: loadAvg(),
		Median: map[string]Figures{}, Ratio: map[string]float64{}, SteadyRatio: map[string]float64{}}
	per := map[string][]Figures{}
	ratios, steady := map[string][]float64{}, map[string][]float64{}
	for run := 1; run <= o.Runs && len(o.Contenders) > 0; run++ {
		topics := make([]string, o.Topics)
		for i := range topics {
			topics[i] = fmt.Sprintf("r%d.bench.%d", run, i)
		}
		n, err := env.fill(ctx, topics, uint64(run))
		if err != nil {
			return nil, fmt.Errorf("run %d: fill: %w", run, err)
		}
		res.Bytes = n
		order := rotate(o.Contenders, run-1)
		var rs []ContenderRun
		byName := map[string]Figures{}
		for _, c := range order {
			fmt.Fprintf(o.Out, "run %d: %s\n", run, c)
			r, err := env.runContender(ctx, c, run, topics, float64(n)/1e6)
			if err != nil {
				return nil, fmt.Errorf("run %d: %s: %w", run, c, err)
			}
			fmt.Fprintf(o.Out, "run %d: %s %.0f rec/s (steady %.0f, startup %.2fs), exact %v\n", run, c,
				r.Figures.RecordsPerSec, r.Figures.SteadyRecordsPerSec, r.Figures.StartupSeconds, r.Exact)
			rs = append(rs, r)
			per[c] = append(per[c], r.Figures)
			byName[c] = r.Figures
			runtime.GC()
		}
		res.Runs = append(res.Runs, rs)
		if m, ok := byName[ContenderMM2]; ok {
			for _, c := range []string{ContenderRecords, ContenderPassthrough} {
				if f, ok := byName[c]; ok {
					ratios[c] = append(ratios[c], f.RecordsPerSec/m.RecordsPerSec)
					steady[c] = append(steady[c], f.SteadyRecordsPerSec/m.SteadyRecordsPerSec)
				}
			}
		}
	}
	for c, fs := range per {
		res.Median[c] = medianFigures(fs)
	}
	for c := range ratios {
		res.Ratio[c], res.SteadyRatio[c] = median(ratios[c]), median(steady[c])
	}
	if o.Offsets || o.Sync {
		if res.Offsets, res.Sync, err = env.groupsAndTopics(ctx, o.Offsets, o.Sync); err != nil {
			return res, fmt.Errorf("offsets and sync: %w", err)
		}
		res.FailoverSeconds = env.failoverSeconds
	}
	return res, nil
}

func rotate(s []string, k int) []string {
	k %= len(s)
	return append(append([]string(nil), s[k:]...), s[:k]...)
}

// mm2Env is the benchmark's two real clusters.
type mm2Env struct {
	o        MM2BenchOptions
	dir      string
	madeDir  bool
	src, dst *kafkatest.Cluster
	stop     func() error
	mm2s     int // MirrorMakers started, for their directory names and aliases

	failoverSeconds float64 // meridian's planned failover in the offsets row
}

func startMM2Env(o MM2BenchOptions) (*mm2Env, error) {
	e := &mm2Env{o: o, dir: o.Dir}
	if e.dir == "" {
		d, err := os.MkdirTemp("", "meridian-bench-mm2-")
		if err != nil {
			return nil, err
		}
		e.dir, e.madeDir = d, true
	}
	logf := func(format string, args ...any) {
		o.Logger.Info(fmt.Sprintf(format, args...), "component", "kafkatest")
	}
	cs, stop, err := kafkatest.Launch(2, kafkatest.Options{Dir: filepath.Join(e.dir, "kafka"), JVMArgs: FullJIT}, logf)
	if err != nil {
		if e.madeDir {
			os.RemoveAll(e.dir)
		}
		return nil, err
	}
	e.src, e.dst, e.stop = cs[0], cs[1], stop
	return e, nil
}

func (e *mm2Env) close() error {
	err := e.stop()
	if e.madeDir {
		err = errors.Join(err, os.RemoveAll(e.dir))
	}
	return err
}

func (e *mm2Env) srcOpts() []kgo.Opt { return []kgo.Opt{kgo.SeedBrokers(e.src.Bootstrap()...)} }
func (e *mm2Env) dstOpts() []kgo.Opt { return []kgo.Opt{kgo.SeedBrokers(e.dst.Bootstrap()...)} }

// fill creates topics at the source and produces the run's records.
func (e *mm2Env) fill(ctx context.Context, topics []string, seed uint64) (int64, error) {
	if err := createTopics(e.srcOpts(), e.o.Partitions, topics); err != nil {
		return 0, err
	}
	p, err := NewProducer(e.srcOpts(), topics, seed, e.o.ValueSize)
	if err != nil {
		return 0, err
	}
	defer p.Close()
	if err := p.Run(ctx, 0, e.o.Records); err != nil {
		return 0, err
	}
	return p.Bytes(), nil
}

// brokerCPU is the two brokers' CPU time so far.
func (e *mm2Env) brokerCPU() time.Duration { return procCPU(e.src.PID()) + procCPU(e.dst.PID()) }

func (e *mm2Env) runContender(ctx context.Context, c string, run int, topics []string, mb float64) (ContenderRun, error) {
	r := ContenderRun{Contender: c}
	b0 := e.brokerCPU()
	var rename func(string) string
	var err error
	switch c {
	case ContenderMM2:
		rename, err = e.runMM2(ctx, &r, run, topics, mb)
	default:
		rename, err = e.runMeridian(ctx, &r, c, run, topics, mb)
	}
	if err != nil {
		return r, err
	}
	r.BrokerCPUSeconds = (e.brokerCPU() - b0).Seconds()
	vctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	rep, err := verify.Compare(vctx, e.srcOpts(), e.dstOpts(), topics, rename)
	if err != nil {
		return r, fmt.Errorf("read back: %w", err)
	}
	r.Exact, r.Report = rep.OK() && rep.Mirrored == e.o.Records, rep.String()
	return r, nil
}

// meridianLab builds a lab on the real clusters whose one route, named
// name, mirrors the topics matching include (and the groups matching
// groups, if not empty) into "<prefix>.{topic}".
func (e *mm2Env) meridianLab(name, include, prefix, groups string, passthrough bool) (*Lab, error) {
	rename := prefix + ".{topic}"
	route := config.Route{Name: name, From: "edge/kafka", To: []string{"hq/kafka"}, Topics: config.TopicFilter{Include: []string{include}},
		Rename: rename, StartAt: "earliest", Discover: time.Second}
	if groups != "" {
		route.Groups = &config.GroupFilter{Include: []string{groups}}
	}
	return New(Options{EdgeBootstrap: e.src.Bootstrap(), HQBootstrap: e.dst.Bootstrap(), Compression: e.o.Compression,
		Passthrough: passthrough, Rename: rename, Routes: []config.Route{route}, Logger: e.o.Logger})
}

func (e *mm2Env) runMeridian(ctx context.Context, r *ContenderRun, c string, run int, topics []string, mb float64) (func(string) string, error) {
	short := "rec"
	if c == ContenderPassthrough {
		short = "pass"
	}
	prefix := fmt.Sprintf("%s%d", short, run)
	l, err := e.meridianLab(prefix, fmt.Sprintf(`^r%d\.bench\.`, run), prefix, "", c == ContenderPassthrough)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	cpu0 := cpuTime()
	start := time.Now()
	var (
		first      time.Time
		firstCount int64
	)
	for _, g := range []string{HQGateway, EdgeGateway} {
		if err := l.Start(g); err != nil {
			return nil, err
		}
	}
	for {
		in, _ := legTotals(l)
		if in.Records > 0 && first.IsZero() {
			first, firstCount = time.Now(), in.Records
		}
		if in.Records >= e.o.Records {
			break
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if time.Since(start) > 10*time.Minute {
			return nil, fmt.Errorf("only %d of %d records after 10 minutes", in.Records, e.o.Records)
		}
		time.Sleep(5 * time.Millisecond)
	}
	r.Figures = figures(e.o.Records, mb, start, first, firstCount, time.Now())
	r.Figures.setCPU(cpuTime() - cpu0)
	return l.RenameTopic, nil
}

// startMM2 starts a MirrorMaker 2 with a fresh source alias (so fresh
// internal topics and Connect group) for topics and groups.
func (e *mm2Env) startMM2(topics, groups string) (*kafkatest.MirrorMaker, string, error) {
	e.mm2s++
	alias := fmt.Sprintf("a%d", e.mm2s)
	logf := func(format string, args ...any) {
		e.o.Logger.Info(fmt.Sprintf(format, args...), "component", "kafkatest")
	}
	mm, err := kafkatest.StartMM2(kafkatest.MM2Options{Source: e.src.Bootstrap(), Target: e.dst.Bootstrap(), SourceAlias: alias,
		Topics: topics, Groups: groups, Config: e.o.MM2Config, Heap: e.o.MM2Heap, JVMArgs: FullJIT,
		Dir: filepath.Join(e.dir, "mm2-"+strconv.Itoa(e.mm2s)), Logf: logf})
	return mm, alias, err
}

func (e *mm2Env) runMM2(ctx context.Context, r *ContenderRun, run int, topics []string, mb float64) (func(string) string, error) {
	start := time.Now()
	mm, alias, err := e.startMM2(fmt.Sprintf(`r%d\.bench\..*`, run), "none")
	if err != nil {
		return nil, err
	}
	defer mm.Stop()
	rename := func(t string) string { return alias + "." + t }
	var dst []string
	for _, t := range topics {
		dst = append(dst, rename(t))
	}
	cl, err := kgo.NewClient(e.dstOpts()...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	var (
		first      time.Time
		firstCount int64
	)
	for {
		n := endSum(ctx, adm, dst)
		if n > 0 && first.IsZero() {
			first, firstCount = time.Now(), n
		}
		if n >= e.o.Records {
			break
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		select {
		case <-mm.Exited():
			return nil, fmt.Errorf("MirrorMaker 2 exited; last lines of %s:\n%s", mm.LogFile(), mm.Tail(20))
		default:
		}
		if time.Since(start) > 10*time.Minute {
			return nil, fmt.Errorf("only %d of %d records after 10 minutes; see %s", n, e.o.Records, mm.LogFile())
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.Figures = figures(e.o.Records, mb, start, first, firstCount, time.Now())
	r.MM2CPUSeconds = procCPU(mm.PID()).Seconds()
	r.Figures.CPUSeconds = r.MM2CPUSeconds
	if r.Figures.Seconds > 0 {
		r.Figures.Cores = r.MM2CPUSeconds / r.Figures.Seconds
	}
	r.MM2RSSMB = procRSSMB(mm.PID())
	return rename, nil
}

// endSum is the sum of the topics' end offsets (0 for a topic not there
// yet). It lists all topics first: asking for offsets or metadata of a
// topic that does not exist makes franz-go retry until its context ends,
// which would delay the first sighting by the timeout.
func endSum(ctx context.Context, adm *kadm.Client, topics []string) int64 {
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	td, err := adm.ListTopics(lctx)
	if err != nil {
		return 0
	}
	var there []string
	for _, t := range topics {
		if d, ok := td[t]; ok && d.Err == nil {
			there = append(there, t)
		}
	}
	if len(there) == 0 {
		return 0
	}
	ends, err := adm.ListEndOffsets(lctx, there...)
	if err != nil {
		return 0
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil && o.Offset > 0 {
			n += o.Offset
		}
	})
	return n
}

// procCPU is a process's user+system CPU time (0 if it cannot be read).
func procCPU(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	// Fields after the command (which may hold spaces) in parentheses.
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ is 100 on Linux
}

// procRSSMB is a process's resident set in MB (VmRSS).
func procRSSMB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
