package lab

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// DemoTopics are the topics the demo produces to: a ship's telemetry,
// alarms and log book.
var DemoTopics = []string{"telemetry.engine", "telemetry.nav", "alarms", "ops.logbook"}

// Producer writes realistic JSON events (keys, headers, timestamps) to a
// cluster. Events for topic i of n are spread round-robin.
type Producer struct {
	cl       *kgo.Client
	topics   []string
	rng      *rand.Rand
	size     int // approximate value size; 0 = natural event size (~250-400 B)
	produced atomic.Int64
	bytes    atomic.Int64
	errMu    sync.Mutex
	err      error
}

// NewProducer connects a producer. size pads values to about size bytes (0:
// natural size).
func NewProducer(opts []kgo.Opt, topics []string, seed uint64, size int) (*Producer, error) {
	cl, err := kgo.NewClient(append(append([]kgo.Opt{}, opts...),
		kgo.ProducerLinger(5*time.Millisecond), kgo.MaxBufferedRecords(100_000))...)
	if err != nil {
		return nil, err
	}
	return &Producer{cl: cl, topics: topics, rng: rand.New(rand.NewPCG(seed, 7)), size: size}, nil
}

// Produced is the number of records acknowledged by the cluster so far.
func (p *Producer) Produced() int64 { return p.produced.Load() }

// Bytes is the value+key+header bytes acknowledged so far.
func (p *Producer) Bytes() int64 { return p.bytes.Load() }

// Close releases the client.
func (p *Producer) Close() { p.cl.Close() }

// Run produces until ctx ends or max records (0: no limit) were produced,
// at about rate records per second (0: as fast as the cluster takes them).
// It returns after every record it produced is acknowledged.
func (p *Producer) Run(ctx context.Context, rate int, max int64) error {
	var sent int64
	start := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for ctx.Err() == nil && (max == 0 || sent < max) {
		n := int64(1000)
		if rate > 0 {
			want := int64(time.Since(start).Seconds() * float64(rate))
			n = want - sent
			if n <= 0 {
				select {
				case <-ctx.Done():
				case <-tick.C:
				}
				continue
			}
		}
		if max > 0 && sent+n > max {
			n = max - sent
		}
		for i := int64(0); i < n; i++ {
			r := p.event(sent + i)
			size := int64(len(r.Key) + len(r.Value))
			for _, h := range r.Headers {
				size += int64(len(h.Key) + len(h.Value))
			}
			p.cl.Produce(context.WithoutCancel(ctx), r, func(_ *kgo.Record, err error) {
				if err != nil {
					p.errMu.Lock()
					if p.err == nil {
						p.err = err
					}
					p.errMu.Unlock()
					return
				}
				p.produced.Add(1)
				p.bytes.Add(size)
			})
		}
		sent += n
	}
	fctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := p.cl.Flush(fctx); err != nil {
		return fmt.Errorf("flush producer: %w", err)
	}
	p.errMu.Lock()
	defer p.errMu.Unlock()
	return p.err
}

var (
	vessels  = []string{"vessel-7", "vessel-9", "vessel-12"}
	severity = []string{"info", "warning", "critical"}
	alarms   = []string{"bilge_level_high", "engine_temp_high", "fuel_pressure_low", "gps_signal_lost", "door_open"}
	crew     = []string{"chief.engineer", "officer.watch", "master", "bosun"}
)

// event builds the i-th event.
func (p *Producer) event(i int64) *kgo.Record {
	topic := p.topics[int(i)%len(p.topics)]
	v := vessels[p.rng.IntN(len(vessels))]
	ts := time.Now()
	var key, val []byte
	switch topic {
	case "telemetry.engine":
		eng := p.rng.IntN(4) + 1
		key = fmt.Appendf(nil, "%s/engine-%d", v, eng)
		val = fmt.Appendf(nil, `{"vessel":%q,"engine":%d,"ts":%q,"rpm":%d,"coolant_c":%.1f,"oil_bar":%.2f,"fuel_lph":%.1f,"load_pct":%d,"hours":%d,"seq":%d}`,
			v, eng, ts.UTC().Format(time.RFC3339Nano), 600+p.rng.IntN(900), 70+p.rng.Float64()*20, 3+p.rng.Float64()*2,
			80+p.rng.Float64()*60, 40+p.rng.IntN(50), 12000+p.rng.IntN(3000), i)
	case "telemetry.nav":
		key = []byte(v + "/gps")
		val = fmt.Appendf(nil, `{"vessel":%q,"ts":%q,"lat":%.5f,"lon":%.5f,"sog_kn":%.1f,"cog_deg":%.1f,"heading_deg":%.1f,"fix":"3d","sats":%d,"seq":%d}`,
			v, ts.UTC().Format(time.RFC3339Nano), 50+p.rng.Float64()*5, -20+p.rng.Float64()*10, 10+p.rng.Float64()*6,
			p.rng.Float64()*360, p.rng.Float64()*360, 7+p.rng.IntN(6), i)
	case "alarms":
		key = []byte(v)
		val = fmt.Appendf(nil, `{"vessel":%q,"ts":%q,"alarm":%q,"severity":%q,"acknowledged":false,"source":"bridge-panel","seq":%d}`,
			v, ts.UTC().Format(time.RFC3339Nano), alarms[p.rng.IntN(len(alarms))], severity[p.rng.IntN(len(severity))], i)
	default:
		key = fmt.Appendf(nil, "%s/%d", v, i%64)
		val = fmt.Appendf(nil, `{"vessel":%q,"ts":%q,"author":%q,"entry":"Watch handover, course and speed as ordered, no remarks","seq":%d}`,
			v, ts.UTC().Format(time.RFC3339Nano), crew[p.rng.IntN(len(crew))], i)
	}
	if p.size > len(val) {
		// Pad with a realistic-looking blob field so compression is not
		// flattered by runs of one byte.
		pad := make([]byte, 0, p.size-len(val))
		for len(pad) < cap(pad)-20 {
			pad = strconv.AppendUint(pad, p.rng.Uint64()%1_000_000, 36)
			pad = append(pad, ',')
		}
		val = append(val[:len(val)-1], fmt.Appendf(nil, `,"samples":"%s"}`, pad)...)
	}
	return &kgo.Record{
		Topic: topic, Key: key, Value: val, Timestamp: ts,
		Headers: []kgo.RecordHeader{
			{Key: "content-type", Value: []byte("application/json")},
			{Key: "source", Value: []byte(v)},
			{Key: "trace-id", Value: strconv.AppendUint(nil, p.rng.Uint64(), 16)},
		},
	}
}

var fleetSeverity = []string{"info", "warning", "alarm", "critical"}

// fleetEvent is the i-th event of region for topic: an engine and
// position reading with a severity, so that filters over headers and
// value (such as headers["severity"] == "alarm" && value.engine.rpm >
// 3000) keep some records and drop others.
func fleetEvent(rng *rand.Rand, region, topic string, i int64) *kgo.Record {
	ts := time.Now()
	sev := fleetSeverity[rng.IntN(len(fleetSeverity))]
	eng := rng.IntN(4) + 1
	val := fmt.Appendf(nil, `{"vessel":%q,"topic":%q,"ts":%q,"seq":%d,"severity":%q,"engine":{"id":%d,"rpm":%d,"coolant_c":%.1f,"oil_bar":%.2f},"nav":{"lat":%.5f,"lon":%.5f,"sog_kn":%.1f}}`,
		region, topic, ts.UTC().Format(time.RFC3339Nano), i, sev, eng, 600+rng.IntN(3400), 70+rng.Float64()*20, 3+rng.Float64()*2,
		50+rng.Float64()*5, -20+rng.Float64()*10, 10+rng.Float64()*6)
	return &kgo.Record{
		Topic: topic, Key: fmt.Appendf(nil, "%s/engine-%d", region, eng), Value: val, Timestamp: ts,
		Headers: []kgo.RecordHeader{
			{Key: "content-type", Value: []byte("application/json")},
			{Key: "source", Value: []byte(region)},
			{Key: "severity", Value: []byte(sev)},
			{Key: "trace-id", Value: strconv.AppendUint(nil, rng.Uint64(), 16)},
		},
	}
}
