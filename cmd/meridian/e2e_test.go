package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/internal/kread"
	"github.com/meridian-gw/meridian/internal/verify"
	"github.com/meridian-gw/meridian/mirror"
	"github.com/meridian-gw/meridian/mirror/dr"
	"github.com/meridian-gw/meridian/mirror/progress"
)

// topoParams fill topologyTmpl.
type topoParams struct {
	SrcBootstrap, DstBootstrap string // "host:port, host:port"
	EastListen, WestListen     string // UDP
	EastAdmin, WestAdmin       string // TCP
	Filter                     string // the route's filter (single-quoted in YAML); "" = none
}

// topologyTmpl is two regions, east and west, with one Kafka cluster and one
// gateway each; the orders topics (but not *.tmp) are mirrored east → west.
// Link certificates are read from certs/ relative to the gateway's working
// directory, where `meridian certs --out certs` puts them.
var topologyTmpl = template.Must(template.New("topology").Parse(`version: 1

regions:
  - name: east
    clusters:
      - name: kafka
        kind: kafka
        bootstrap: [{{.SrcBootstrap}}]
    gateways:
      - name: east-gw
        listen: {{.EastListen}}
        admin: {{.EastAdmin}}
        tls:
          ca_file: certs/ca.crt
          cert_file: certs/east-gw.crt
          key_file: certs/east-gw.key

  - name: west
    clusters:
      - name: kafka
        kind: kafka
        bootstrap: [{{.DstBootstrap}}]
    gateways:
      - name: west-gw
        listen: {{.WestListen}}
        admin: {{.WestAdmin}}
        tls:
          ca_file: certs/ca.crt
          cert_file: certs/west-gw.crt
          key_file: certs/west-gw.key

links:
  - between: [east, west]
    profile: lan
    compression: zstd
    passthrough: true   # the record mode runs through the binary in TestDemo

routes:
  - name: orders
    from: east/kafka
    to: [west/kafka]
    topics:
      include: ['^orders\.']
      exclude: ['\.tmp$']
{{- if .Filter}}
    filter: '{{.Filter}}'
{{- end}}
`))

// writeTopology writes dir/topology.yaml and returns its path.
func writeTopology(t *testing.T, dir string, p topoParams) string {
	t.Helper()
	var b strings.Builder
	if err := topologyTmpl.Execute(&b, p); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "topology.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// Topics at the source: the route mirrors the first two, never the third.
var (
	mirroredTopics = []string{"orders.eu", "orders.us"}
	excludedTopic  = "orders.tmp"
)

// firstBatch is how many records step 1 of TestRunTwoGateways mirrors.
const firstBatch = 5000

// legID is the inbound leg of the route at the west gateway.
const legID = "orders:west/kafka"

// recordGen makes distinct, checkable records: keys (a few null), headers
// (some with empty or null values) and explicit timestamps. Every 20th
// record goes to the excluded topic.
type recordGen struct {
	next     int64
	mirrored atomic.Int64 // records produced to mirroredTopics
	base     time.Time
}

func (g *recordGen) record() (*kgo.Record, bool) {
	i := g.next
	g.next++
	r := &kgo.Record{
		Topic:     mirroredTopics[i%2],
		Value:     fmt.Appendf(nil, `{"order":%d,"amount":%d.%02d,"currency":"EUR"}`, i, i%997, i%100),
		Timestamp: g.base.Add(time.Duration(i) * time.Millisecond),
		Headers: []kgo.RecordHeader{
			{Key: "seq", Value: strconv.AppendInt(nil, i, 10)},
			{Key: "origin", Value: []byte("east")},
		},
	}
	if i%13 != 0 {
		r.Key = fmt.Appendf(nil, "customer-%d", i%101)
	}
	switch {
	case i%7 == 0:
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: "empty", Value: []byte{}})
	case i%11 == 0:
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: "null", Value: nil})
	}
	if i%20 == 19 {
		r.Topic = excludedTopic
		return r, false
	}
	return r, true
}

// produce writes records until n more have gone to the mirrored topics,
// in synchronous chunks of chunk records, pausing pause between chunks.
func (g *recordGen) produce(ctx context.Context, cl *kgo.Client, n int64, chunk int, pause time.Duration) error {
	target := g.mirrored.Load() + n
	for g.mirrored.Load() < target {
		var rs []*kgo.Record
		var m int64
		for len(rs) < chunk && g.mirrored.Load()+m < target {
			r, mirrored := g.record()
			rs = append(rs, r)
			if mirrored {
				m++
			}
		}
		if err := cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
			return fmt.Errorf("produce: %w", err)
		}
		g.mirrored.Add(m)
		if pause > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(pause):
			}
		}
	}
	return nil
}

// waitMirrored polls by read-back (verify.Compare of both clusters) until
// the destination holds want records of the mirrored topics, then requires
// the mirror to be exact.
func waitMirrored(t *testing.T, src, dst []kgo.Opt, want int64, within time.Duration) *verify.Report {
	t.Helper()
	rename := func(s string) string { return s }
	var rep *verify.Report
	waitFor(t, within, 300*time.Millisecond, fmt.Sprintf("destination holds %d records", want), func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		r, err := verify.Compare(ctx, src, dst, mirroredTopics, rename)
		if err != nil {
			return err
		}
		rep = r
		if got := r.Mirrored + r.Duplicated + r.Unexpected; got < want {
			return fmt.Errorf("read back %v", r)
		}
		return nil
	})
	if !rep.OK() || rep.Produced != want || rep.Mirrored != want {
		t.Fatalf("mirror not exact: %v, want produced = mirrored = %d and nothing lost, duplicated, reordered or unexpected\n%s",
			rep, want, strings.Join(rep.Samples, "\n"))
	}
	return rep
}

// httpGet fetches http://addr/path (5 s at most).
func httpGet(addr, path string) (int, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// gatewayStatus runs `meridian status --admin addr --output json`.
func gatewayStatus(t *testing.T, addr string) (*mirror.Status, error) {
	t.Helper()
	r := meridian(t, "", nil, "status", "--admin", addr, "--output", "json")
	if r.code != 0 {
		return nil, fmt.Errorf("meridian status: %v", r)
	}
	var st mirror.Status
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		return nil, fmt.Errorf("meridian status --output json: %v\n%s", err, r.stdout)
	}
	return &st, nil
}

func findLeg(st *mirror.Status, id string) *mirror.LegStatus {
	for i := range st.Legs {
		if st.Legs[i].Leg == id {
			return &st.Legs[i]
		}
	}
	return nil
}

// TestRunTwoGateways runs the east and west gateways of a topology as two
// `meridian run` processes between two in-process Kafka clusters, and checks
// the mirror by reading both clusters back: first a plain run, then the
// admin endpoints and `meridian status`, then a SIGKILL and restart of the
// receiving gateway mid-stream, then a graceful SIGTERM drain.
func TestRunTwoGateways(t *testing.T) {
	t.Parallel() // mostly waits (QUIC idle timeout after the SIGKILL)
	e := startTwoGateways(t)

	// 1. 5,000 records (plus some to the excluded topic), read back exact.
	e.firstRecords(t)
	// 1b. `meridian offsets translate`: a group at the source that has read
	// the first record of each partition translates to the destination
	// offset right after that record's copy.
	t.Run("offsets translate", e.offsetsTranslate)
	// 2. Admin endpoints and `meridian status`.
	t.Run("admin", e.admin)
	t.Run("status", e.status)

	// 3. Restart each gateway gracefully (SIGTERM, then start again)
	// while a producer keeps writing; the mirror stays exact.
	t.Run("graceful restarts", func(t *testing.T) {
		e.midStream(t, 3000, func() {
			e.stopGracefully(t, e.east)
			e.east = e.runGW("east-gw")
			e.stopGracefully(t, e.west)
			e.west = e.runGW("west-gw")
		})
	})

	// 4. SIGKILL the receiving gateway while a producer keeps writing, and
	// start it again: its open transaction is fenced and aborted, the
	// sender resumes from the committed positions, the mirror stays exact.
	t.Run("kill receiver", func(t *testing.T) {
		e.midStream(t, 4000, func() {
			e.west.signal(t, syscall.SIGKILL)
			if code := e.west.wait(t, 10*time.Second); code != -1 {
				t.Errorf("west-gw after SIGKILL: exit status %d, want killed by the signal", code)
			}
			e.earlier = append(e.earlier, e.west)
			e.west = e.runGW("west-gw")
		})
	})

	// 5. SIGTERM: both drain and exit 0.
	t.Run("drain", func(t *testing.T) {
		e.west.signal(t, syscall.SIGTERM)
		e.east.signal(t, syscall.SIGTERM)
		for _, c := range []*child{e.west, e.east} {
			if code := c.wait(t, 15*time.Second); code != 0 {
				t.Errorf("%s after SIGTERM: exit status %d, want 0", c.name, code)
			}
		}
	})
	for _, c := range append(e.earlier, e.west, e.east) {
		if _, stderr := c.output(); strings.Contains(stderr, "panic") {
			t.Errorf("%s stderr mentions a panic", c.name)
		}
	}
	if t.Failed() {
		return
	}
	// Nothing was lost in the drain either.
	waitMirrored(t, e.srcOpts, e.dstOpts, e.gen.mirrored.Load(), 10*time.Second)

	// 8. `meridian failover`: a dry run changes nothing; the failover of a
	// fully mirrored route reports RPO 0 and exits 0; a second one exits 1.
	t.Run("failover", e.failover)
}

// twoGateways is the state TestRunTwoGateways's steps share: the clusters,
// the topology in dir, the running gateway processes and the producer.
type twoGateways struct {
	t                *testing.T // the whole test, which owns the processes
	srcOpts, dstOpts []kgo.Opt
	dir, topo        string
	p                topoParams
	ctx              context.Context
	cl               *kgo.Client
	gen              *recordGen
	east, west       *child
	earlier          []*child // gateway processes that have exited
}

// twoClusters starts the source cluster, holding mirroredTopics and
// excludedTopic (3 partitions each), and an empty destination; the test
// closes them.
func twoClusters(t *testing.T) (src, dst *kfake.Cluster) {
	t.Helper()
	src, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, append(slices.Clone(mirroredTopics), excludedTopic)...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	dst, err = kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dst.Close)
	return src, dst
}

// startTwoGateways starts the clusters, writes the topology and its
// certificates, validates it and runs both gateways, the receiver first.
func startTwoGateways(t *testing.T) *twoGateways { return startTwoGatewaysWith(t, "") }

// startTwoGatewaysWith is startTwoGateways with a filter on the route.
func startTwoGatewaysWith(t *testing.T, filter string) *twoGateways {
	e := &twoGateways{t: t}
	src, dst := twoClusters(t)
	e.srcOpts = []kgo.Opt{kgo.SeedBrokers(src.ListenAddrs()...)}
	e.dstOpts = []kgo.Opt{kgo.SeedBrokers(dst.ListenAddrs()...)}

	e.dir = t.TempDir()
	e.p = topoParams{
		SrcBootstrap: strings.Join(src.ListenAddrs(), ", "),
		DstBootstrap: strings.Join(dst.ListenAddrs(), ", "),
		EastListen:   freeUDPAddr(t), WestListen: freeUDPAddr(t),
		EastAdmin: freeTCPAddr(t), WestAdmin: freeTCPAddr(t),
		Filter: filter,
	}
	e.topo = writeTopology(t, e.dir, e.p)
	if r := meridian(t, e.dir, nil, "certs", "--out", "certs", "-f", e.topo); r.code != 0 {
		t.Fatalf("meridian certs: %v", r)
	}
	if r := meridian(t, e.dir, nil, "validate", "-f", e.topo); r.code != 0 || !strings.HasPrefix(r.stdout, "ok: ") {
		t.Fatalf("meridian validate: %v", r)
	}

	e.west = e.runGW("west-gw") // the receiver first, so the sender's first dial succeeds
	e.east = e.runGW("east-gw")

	cl, err := kgo.NewClient(append(slices.Clone(e.srcOpts), kgo.ProducerLinger(2*time.Millisecond))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	e.cl = cl
	e.gen = &recordGen{base: time.UnixMilli(1_700_000_000_000)}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	e.ctx = ctx

	return e
}

// runGW starts `meridian run` for the named gateway, owned by the whole
// test (not the subtest that starts it).
func (e *twoGateways) runGW(name string) *child {
	return startChild(e.t, name, e.dir, "run", "-f", e.topo, "--gateway", name, "--log-level", "info")
}

// firstRecords mirrors 5,000 records (plus some to the excluded topic) and
// checks the destination topics.
func (e *twoGateways) firstRecords(t *testing.T) {
	if err := e.gen.produce(e.ctx, e.cl, firstBatch, 500, 0); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	rep := waitMirrored(t, e.srcOpts, e.dstOpts, firstBatch, 60*time.Second)
	t.Logf("mirrored in %v after the last produce: %v", time.Since(start).Round(time.Millisecond), rep)

	adm := kadm.NewClient(mustClient(t, e.dstOpts))
	topics, err := adm.ListTopics(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if topics.Has(excludedTopic) {
		t.Errorf("%s was created at the destination; the route excludes it", excludedTopic)
	}
	for _, tp := range mirroredTopics {
		if d, ok := topics[tp]; !ok || len(d.Partitions) != 3 {
			t.Errorf("destination topic %s: exists %v with %d partitions, want 3 as at the source", tp, ok, len(d.Partitions))
		}
	}

}

// offsetsTranslate checks `meridian offsets translate` against both clusters.
func (e *twoGateways) offsetsTranslate(t *testing.T) {
	sadm := kadm.NewClient(mustClient(t, e.srcOpts))
	os := kadm.Offsets{}
	for p := int32(0); p < 3; p++ {
		os.Add(kadm.Offset{Topic: mirroredTopics[0], Partition: p, At: 1})
	}
	if err := sadm.CommitAllOffsets(e.ctx, "billing", os); err != nil {
		t.Fatal(err)
	}
	r := meridian(t, e.dir, nil, "offsets", "translate", "-f", e.topo, "--route", "orders", "--group", "billing", "--output", "json")
	if r.code != 0 {
		t.Fatalf("offsets translate: %v", r)
	}
	var legs []struct {
		Leg        string                 `json:"leg"`
		Partitions []progress.Translation `json:"partitions"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &legs); err != nil || len(legs) != 1 || len(legs[0].Partitions) != 3 {
		t.Fatalf("offsets translate --output json = %q (%v), want one leg with 3 partitions", r.stdout, err)
	}
	// The destination record at each translated offset is the source
	// record at offset 1 (read back from both clusters).
	at := func(opts []kgo.Opt, topic string) map[[2]int64]uint64 {
		m := map[[2]int64]uint64{}
		if err := kread.Each(e.ctx, opts, []string{topic}, func(r *kgo.Record) {
			m[[2]int64{int64(r.Partition), r.Offset}] = verify.Fingerprint(r)
		}); err != nil {
			t.Fatal(err)
		}
		return m
	}
	srcAt, dstAt := at(e.srcOpts, mirroredTopics[0]), at(e.dstOpts, mirroredTopics[0])
	for _, tr := range legs[0].Partitions {
		want, ok := srcAt[[2]int64{int64(tr.Partition), 1}]
		if tr.Status != progress.Exact || !ok || dstAt[[2]int64{int64(tr.Partition), tr.Dest}] != want {
			t.Errorf("partition %d: source offset 1 translated to %d (%s), which does not hold that record", tr.Partition, tr.Dest, tr.Status)
		}
	}
	if r := meridian(t, e.dir, nil, "offsets", "translate", "-f", e.topo, "--route", "nope", "--group", "billing"); r.code != 1 || !strings.Contains(r.stderr, `no route "nope"`) {
		t.Errorf("unknown route: %v, want exit 1 naming it", r)
	}
}

// admin checks /healthz and /metrics of both gateways.
func (e *twoGateways) admin(t *testing.T) {
	for _, addr := range []string{e.p.WestAdmin, e.p.EastAdmin} {
		waitFor(t, 15*time.Second, 200*time.Millisecond, addr+"/healthz is 200", func() error {
			code, body, err := httpGet(addr, "/healthz")
			if err == nil && code != http.StatusOK {
				err = fmt.Errorf("HTTP %d: %s", code, body)
			}
			return err
		})
		code, body, err := httpGet(addr, "/metrics")
		if err != nil || code != http.StatusOK || !strings.Contains(body, "meridian_records_total") {
			t.Errorf("GET %s/metrics: HTTP %d, %v; want 200 with meridian_records_total", addr, code, err)
		}
	}
}

// status checks /status and `meridian status` of both gateways.
func (e *twoGateways) status(t *testing.T) {
	st, err := gatewayStatus(t, e.p.WestAdmin)
	if err != nil {
		t.Fatal(err)
	}
	l := findLeg(st, legID)
	if st.Gateway != "west-gw" || st.Region != "west" || l == nil {
		t.Fatalf("west status = %+v, want gateway west-gw in region west with leg %s", st, legID)
	}
	if l.Direction != "in" || l.Records < firstBatch || l.From != "east/kafka" || l.To != "west/kafka" {
		t.Errorf("west leg = %+v, want direction in, from east/kafka to west/kafka, records >= %d", *l, firstBatch)
	}

	r := meridian(t, "", nil, "status", "--admin", e.p.WestAdmin)
	if r.code != 0 {
		t.Fatalf("meridian status: %v", r)
	}
	lines := strings.Split(r.stdout, "\n")
	var header, row string
	for _, line := range lines {
		if strings.HasPrefix(line, "LEG ") {
			header = line
		}
		if strings.HasPrefix(line, legID+" ") {
			row = line
		}
	}
	col := strings.Index(header, "RECORDS")
	if !strings.HasPrefix(lines[0], "gateway west-gw (region west)") || col < 0 || len(row) <= col {
		t.Fatalf("meridian status: no table with leg %s and a RECORDS column:\n%s", legID, r.stdout)
	}
	n, err := strconv.ParseInt(strings.Fields(row[col:])[0], 10, 64)
	if err != nil || n != l.Records {
		t.Errorf("meridian status: leg %s RECORDS %q, want %d as in --output json:\n%s", legID, strings.Fields(row[col:])[0], l.Records, r.stdout)
	}

	st, err = gatewayStatus(t, e.p.EastAdmin)
	if err != nil {
		t.Fatal(err)
	}
	if l := findLeg(st, legID); l == nil || l.Direction != "out" || l.Records < firstBatch || len(st.Peers) != 1 || st.Peers[0].Gateway != "west-gw" || !st.Peers[0].Connected || !st.Peers[0].Passthrough {
		t.Errorf("east status = %+v, want the out leg %s with records >= %d and peer west-gw connected over a passthrough link", st, legID, firstBatch)
	}
	if r := meridian(t, "", nil, "status", "--admin", e.p.EastAdmin); !strings.Contains(r.stdout, "(passthrough)") {
		t.Errorf("meridian status of east does not show the passthrough link:\n%s", r.stdout)
	}
}

// midStream runs a producer of more records in the background, calls
// action once a quarter of them are written, and when the producer is
// done requires the destination to hold every record exactly once.
func (e *twoGateways) midStream(t *testing.T, more int64, action func()) {
	t.Helper()
	done := make(chan error, 1)
	before := e.gen.mirrored.Load()
	want := before + more
	go func() { done <- e.gen.produce(e.ctx, e.cl, more, 100, 40*time.Millisecond) }()
	waitFor(t, 20*time.Second, 20*time.Millisecond, "producer under way", func() error {
		if n := e.gen.mirrored.Load() - before; n < more/4 {
			return fmt.Errorf("%d produced", n)
		}
		return nil
	})
	action()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("producer did not finish within 40 s")
	}
	start := time.Now()
	rep := waitMirrored(t, e.srcOpts, e.dstOpts, want, 60*time.Second)
	t.Logf("mirrored in %v after the last produce: %v", time.Since(start).Round(time.Millisecond), rep)
}

// stopGracefully sends SIGTERM and wants exit status 0.
func (e *twoGateways) stopGracefully(t *testing.T, c *child) {
	t.Helper()
	c.signal(t, syscall.SIGTERM)
	if code := c.wait(t, 15*time.Second); code != 0 {
		t.Errorf("%s after SIGTERM: exit status %d, want 0", c.name, code)
	}
	e.earlier = append(e.earlier, c)
}

// failover runs `meridian failover` and `failback` against the stopped gateways' clusters.
func (e *twoGateways) failover(t *testing.T) {
	r := meridian(t, e.dir, nil, "failover", "-f", e.topo, "--route", "orders", "--dry-run")
	if r.code != 0 || !strings.Contains(r.stdout, "dry run, nothing changed") {
		t.Fatalf("failover --dry-run: %v", r)
	}
	r = meridian(t, e.dir, nil, "failover", "-f", e.topo, "--route", "orders", "--output", "json", "--drain", "10s")
	if r.code != 0 {
		t.Fatalf("failover: %v, want exit 0 (nothing at risk)", r)
	}
	var reps []dr.FailoverReport
	if err := json.Unmarshal([]byte(r.stdout), &reps); err != nil || len(reps) != 1 {
		t.Fatalf("failover --output json = %q (%v)", r.stdout, err)
	}
	if rep := reps[0]; !rep.Fenced || !rep.Drained || rep.RPORecords != 0 || !rep.RPOExact || rep.Epoch != 1 {
		t.Errorf("failover report %+v, want fenced, drained, exactly 0 records at risk, epoch 1", rep)
	}
	r = meridian(t, e.dir, nil, "failover", "-f", e.topo, "--route", "orders")
	if r.code != 1 || !strings.Contains(r.stderr, "fenced already") {
		t.Errorf("second failover: %v, want exit 1 saying it is fenced already", r)
	}
	// Back again: nothing was written at DR meanwhile, nothing is lost
	// at the old primary; the fence is lifted.
	r = meridian(t, e.dir, nil, "failback", "-f", e.topo, "--route", "orders", "--output", "json")
	if r.code != 0 || !strings.Contains(r.stdout, `"stragglers": null`) && !strings.Contains(r.stdout, `"stragglers": []`) {
		t.Fatalf("failback: %v, want exit 0 with no stragglers", r)
	}
	r = meridian(t, e.dir, nil, "failback", "-f", e.topo, "--route", "orders")
	if r.code != 1 || !strings.Contains(r.stderr, "not failed over") {
		t.Errorf("second failback: %v, want exit 1 saying it is not failed over", r)
	}
}

func mustClient(t *testing.T, opts []kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// TestRunWithoutPeer: a sending gateway whose peer never comes up reports it
// on /healthz (503) and in its status, and still stops cleanly on SIGTERM
// while a dial is pending. It also runs with --log-format json.
func TestRunWithoutPeer(t *testing.T) {
	t.Parallel() // mostly waits for the 10 s QUIC handshake timeout
	src, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, mirroredTopics...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	dir := t.TempDir()
	p := topoParams{
		SrcBootstrap: strings.Join(src.ListenAddrs(), ", "), DstBootstrap: "127.0.0.1:1",
		EastListen: freeUDPAddr(t), WestListen: freeUDPAddr(t), // nothing listens on WestListen
		EastAdmin: freeTCPAddr(t), WestAdmin: freeTCPAddr(t),
	}
	topo := writeTopology(t, dir, p)
	if r := meridian(t, dir, nil, "certs", "--out", "certs", "-f", topo); r.code != 0 {
		t.Fatalf("meridian certs: %v", r)
	}
	east := startChild(t, "east-gw", dir, "run", "-f", topo, "--gateway", "east-gw", "--log-format", "json")
	waitFor(t, 30*time.Second, 200*time.Millisecond, "east-gw reports west-gw unreachable on /healthz", func() error {
		code, body, err := httpGet(p.EastAdmin, "/healthz")
		if err != nil {
			return err
		}
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "west-gw") {
			return fmt.Errorf("HTTP %d: %s", code, body)
		}
		return nil
	})
	st, err := gatewayStatus(t, p.EastAdmin)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Peers) != 1 || st.Peers[0].Connected || st.Peers[0].Failures == 0 || st.Peers[0].LastError == "" {
		t.Errorf("east status peers = %+v, want west-gw not connected, with failures and the last error", st.Peers)
	}
	east.signal(t, syscall.SIGTERM)
	if code := east.wait(t, 15*time.Second); code != 0 {
		t.Errorf("east-gw after SIGTERM: exit status %d, want 0", code)
	}
	_, stderr := east.output()
	if strings.Contains(stderr, "panic") {
		t.Errorf("east-gw stderr mentions a panic")
	}
	// --log-format json: every line of stderr is a JSON log record.
	lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	for _, line := range lines {
		var rec struct {
			Time  *time.Time `json:"time"`
			Level string     `json:"level"`
			Msg   string     `json:"msg"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil || rec.Time == nil || rec.Level == "" || rec.Msg == "" {
			t.Errorf("--log-format json: stderr line is not a JSON log record (%v): %s", err, line)
		}
	}
	if len(lines) < 2 || !strings.Contains(stderr, `"msg":"gateway running"`) {
		t.Errorf("--log-format json: want a \"gateway running\" record, got:\n%s", stderr)
	}
}

// TestRunAddressInUse: a gateway whose admin (TCP) or link (UDP) address is
// taken exits 1 naming the address, and does not hang.
func TestRunAddressInUse(t *testing.T) {
	dst, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dst.Close)
	dir := t.TempDir()
	p := topoParams{
		SrcBootstrap: "127.0.0.1:1", DstBootstrap: strings.Join(dst.ListenAddrs(), ", "),
		EastListen: freeUDPAddr(t), WestListen: freeUDPAddr(t),
		EastAdmin: freeTCPAddr(t), WestAdmin: freeTCPAddr(t),
	}
	topo := writeTopology(t, dir, p)
	if r := meridian(t, dir, nil, "certs", "--out", "certs", "-f", topo); r.code != 0 {
		t.Fatalf("meridian certs: %v", r)
	}
	t.Run("admin", func(t *testing.T) {
		ln, err := net.Listen("tcp", p.WestAdmin)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		c := startChild(t, "west-gw", dir, "run", "-f", topo, "--gateway", "west-gw")
		code := c.wait(t, 15*time.Second)
		_, stderr := c.output()
		if code != 1 || !strings.Contains(stderr, p.WestAdmin) {
			t.Errorf("west-gw with its admin address taken: exit status %d, stderr:\n%s\nwant exit status 1 naming %s", code, stderr, p.WestAdmin)
		}
	})
	t.Run("link", func(t *testing.T) {
		pc, err := net.ListenPacket("udp", p.WestListen)
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		c := startChild(t, "west-gw", dir, "run", "-f", topo, "--gateway", "west-gw")
		code := c.wait(t, 15*time.Second)
		_, stderr := c.output()
		if code != 1 || !strings.Contains(stderr, p.WestListen) {
			t.Errorf("west-gw with its link address taken: exit status %d, stderr:\n%s\nwant exit status 1 naming %s", code, stderr, p.WestListen)
		}
	})
}
