package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goamqp "github.com/Azure/go-amqp"

	"github.com/meridian-gw/meridian/internal/amqptest"
	"github.com/meridian-gw/meridian/transport"
	"github.com/meridian-gw/meridian/transport/amqp"
	"github.com/meridian-gw/meridian/transport/transporttest"
)

// AMQPBenchOptions configure RunAMQPBench. Zero values take the defaults.
type AMQPBenchOptions struct {
	// BrokerURL is an AMQP 1.0 broker with queues at /queue/NAME
	// (RabbitMQ's addressing); "": a RabbitMQ node of its own
	// (internal/amqptest), started for the benchmark and stopped after.
	BrokerURL string
	Messages  int               // per contender and run; zero: 3,000
	BatchRaw  int               // raw bytes of a link batch (1 KiB JSON records); zero: 64 KiB
	Codecs    []transport.Codec // nil: zstd, s2, none
	Runs      int               // zero: 3
	Logger    *slog.Logger
	Out       io.Writer // per-run lines; nil: none
}

// AMQPFigures are one contender's run: messages through the broker per
// second, the bytes they carried (wire: message bodies; raw: the records'
// bytes before compression, what the link delivers) and the process's CPU.
type AMQPFigures struct {
	Seconds     float64 `json:"seconds"`
	MsgPerSec   float64 `json:"msg_per_sec"`
	WireMBPerS  float64 `json:"wire_mb_per_sec"`
	RawMBPerSec float64 `json:"raw_mb_per_sec"`
	Cores       float64 `json:"cores"`
	// Stalls counts the times the broker stopped delivering to the
	// receiver with credit granted and the receiver sent its flow again
	// (transport/amqp's package doc: RabbitMQ 3.10); each costs about 2 s.
	Stalls int `json:"stalls"`
}

// AMQPCodecResult compares, for one codec, the link with a plain go-amqp
// loop sending messages of the link's wire size: medians of the runs.
type AMQPCodecResult struct {
	Codec     string      `json:"codec"`
	WireBytes int         `json:"wire_bytes_per_msg"` // the link batch's encoded size, also the plain messages' size
	RawBytes  int         `json:"raw_bytes_per_msg"`
	Plain     AMQPFigures `json:"plain"`
	Link      AMQPFigures `json:"link"`
	// MsgRatio is the link's messages per second over the plain loop's:
	// the broker's work per message is the same.
	MsgRatio float64 `json:"msg_ratio"`
	// GoodputRatio is the link's raw bytes per second (the records it
	// delivers) over the bytes per second the broker accepted from the
	// plain loop: compression counts in the link's favour.
	GoodputRatio float64   `json:"goodput_ratio"`
	MsgRatios    []float64 `json:"msg_ratios"` // per run
	Exact        bool      `json:"exact"`      // every link batch arrived once, in order per partition, and was acknowledged
}

// AMQPBenchResult is RunAMQPBench's report.
type AMQPBenchResult struct {
	Broker   string            `json:"broker"`
	Messages int               `json:"messages"`
	Runs     int               `json:"runs"`
	Codecs   []AMQPCodecResult `json:"codecs"`
}

// amqpBenchPipelines is how many goroutines send the link's batches, as
// the engine's sender runs 4 pipelines per leg.
const amqpBenchPipelines = 4

// RunAMQPBench measures an AMQP link session (transport/amqp, what a
// gateway's engine drives: 4 sending pipelines, the receiver acknowledging
// every 16 batches after they "commit", messages settled on the Ack)
// against a plain go-amqp producer→consumer loop on the same broker, with
// the same message size (64 unsettled sends in flight, receiver credit
// 256 granted by hand 64 at a time, accepted on receipt), alternately in each run.
func RunAMQPBench(ctx context.Context, o AMQPBenchOptions) (*AMQPBenchResult, error) {
	if o.Messages <= 0 {
		o.Messages = 3000
	}
	if o.BatchRaw <= 0 {
		o.BatchRaw = 64 << 10
	}
	if o.Codecs == nil {
		o.Codecs = []transport.Codec{transport.CodecZstd, transport.CodecS2, transport.CodecNone}
	}
	if o.Runs <= 0 {
		o.Runs = 3
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	res := &AMQPBenchResult{Broker: o.BrokerURL, Messages: o.Messages, Runs: o.Runs}
	url := o.BrokerURL
	if url == "" {
		br, stop, err := amqptest.Launch(func(f string, a ...any) { o.Logger.Info(fmt.Sprintf(f, a...), "component", "amqptest") })
		if err != nil {
			return nil, fmt.Errorf("start RabbitMQ: %w", err)
		}
		defer stop()
		url = br.URL()
		res.Broker = "RabbitMQ (internal/amqptest) on " + br.Addr()
	}
	rng := transporttest.NewRand(9)
	batches := make([]*transport.Batch, 64)
	for i := range batches {
		batches[i] = transporttest.JSONBatch(rng, "leg1", "t", 0, 0, 0, o.BatchRaw)
	}
	for ci, codec := range o.Codecs {
		enc, err := transport.NewEncoder(codec)
		if err != nil {
			return nil, err
		}
		wire, err := enc.AppendFrame(nil, batches[0])
		if err != nil {
			return nil, err
		}
		cr := AMQPCodecResult{Codec: codec.String(), WireBytes: len(wire), RawBytes: batches[0].RawSize(), Exact: true}
		var plains, links []AMQPFigures
		for run := range o.Runs {
			queue := fmt.Sprintf("bench-%d-%d", ci, run)
			var p, l AMQPFigures
			var exact bool
			plainRun := func() error {
				var err error
				p, err = amqpPlain(ctx, url, "/queue/"+queue+"-plain", wire, cr.RawBytes, o.Messages)
				return err
			}
			linkRun := func() error {
				var err error
				l, exact, err = amqpLink(ctx, url, queue, batches, codec, o.Messages, nil)
				return err
			}
			first, second := plainRun, linkRun
			if run%2 == 1 {
				first, second = linkRun, plainRun
			}
			if err := first(); err != nil {
				return nil, err
			}
			if err := second(); err != nil {
				return nil, err
			}
			cr.Exact = cr.Exact && exact
			plains, links = append(plains, p), append(links, l)
			cr.MsgRatios = append(cr.MsgRatios, l.MsgPerSec/p.MsgPerSec)
			if o.Out != nil {
				fmt.Fprintf(o.Out, "%-4s run %d: plain %6.0f msg/s %6.1f MB/s (%.2f cores, %d stalls) | link %6.0f msg/s, %6.1f MB/s wire, %6.1f MB/s raw (%.2f cores, %d stalls) | msg ratio %.2f\n",
					codec, run+1, p.MsgPerSec, p.WireMBPerS, p.Cores, p.Stalls, l.MsgPerSec, l.WireMBPerS, l.RawMBPerSec, l.Cores, l.Stalls, l.MsgPerSec/p.MsgPerSec)
			}
		}
		cr.Plain, cr.Link = medianAMQP(plains), medianAMQP(links)
		cr.MsgRatio = cr.Link.MsgPerSec / cr.Plain.MsgPerSec
		cr.GoodputRatio = cr.Link.RawMBPerSec / cr.Plain.WireMBPerS
		res.Codecs = append(res.Codecs, cr)
	}
	return res, nil
}

func medianAMQP(fs []AMQPFigures) AMQPFigures {
	pick := func(get func(AMQPFigures) float64) float64 {
		xs := make([]float64, len(fs))
		for i, f := range fs {
			xs[i] = get(f)
		}
		return median(xs)
	}
	return AMQPFigures{
		Seconds:     pick(func(f AMQPFigures) float64 { return f.Seconds }),
		MsgPerSec:   pick(func(f AMQPFigures) float64 { return f.MsgPerSec }),
		WireMBPerS:  pick(func(f AMQPFigures) float64 { return f.WireMBPerS }),
		RawMBPerSec: pick(func(f AMQPFigures) float64 { return f.RawMBPerSec }),
		Cores:       pick(func(f AMQPFigures) float64 { return f.Cores }),
		Stalls:      int(pick(func(f AMQPFigures) float64 { return float64(f.Stalls) })),
	}
}

func amqpFigures(n, wire, raw int, began time.Time, cpu0 time.Duration) AMQPFigures {
	secs := time.Since(began).Seconds()
	return AMQPFigures{
		Seconds: secs, MsgPerSec: float64(n) / secs,
		WireMBPerS: float64(n*wire) / secs / 1e6, RawMBPerSec: float64(n*raw) / secs / 1e6,
		Cores: (cpuTime() - cpu0).Seconds() / secs,
	}
}

// amqpPlain sends n messages of body through queue with go-amqp alone and
// receives them.
func amqpPlain(ctx context.Context, url, queue string, body []byte, raw, n int) (AMQPFigures, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	c, err := goamqp.Dial(ctx, url, nil)
	if err != nil {
		return AMQPFigures{}, err
	}
	defer c.Close()
	ss, err := c.NewSession(ctx, nil)
	if err != nil {
		return AMQPFigures{}, err
	}
	snd, err := ss.NewSender(ctx, queue, nil)
	if err != nil {
		return AMQPFigures{}, err
	}
	rs, err := c.NewSession(ctx, nil)
	if err != nil {
		return AMQPFigures{}, err
	}
	// Credit by hand, 64 at a time within 256: go-amqp's automatic credit
	// stalls against RabbitMQ 3.10 after some thousands of messages
	// (transport/amqp's package doc), as any application must.
	rcv, err := rs.NewReceiver(ctx, queue, &goamqp.ReceiverOptions{Credit: -1})
	if err != nil {
		return AMQPFigures{}, err
	}
	if err := rcv.IssueCredit(256); err != nil {
		return AMQPFigures{}, err
	}
	began, cpu0 := time.Now(), cpuTime()
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	stalls := 0
	wg.Go(func() {
		for i := 0; i < n; {
			// The broker may stop delivering with credit granted (as the
			// link's listener, send the flow again after 2 s of silence).
			rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
			m, err := rcv.Receive(rctx, nil)
			rcancel()
			if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
				if err := rcv.IssueCredit(1); err != nil {
					errs <- fmt.Errorf("plain credit: %w", err)
					return
				}
				stalls++
				continue
			}
			if err != nil {
				errs <- fmt.Errorf("plain receive after %d messages: %w", i, err)
				return
			}
			i++
			if len(m.GetData()) != len(body) {
				errs <- fmt.Errorf("plain receive: %d bytes, sent %d", len(m.GetData()), len(body))
				return
			}
			if err := rcv.AcceptMessage(ctx, m); err != nil {
				errs <- fmt.Errorf("plain accept: %w", err)
				return
			}
			if i%64 == 0 {
				if err := rcv.IssueCredit(64); err != nil {
					errs <- fmt.Errorf("plain credit: %w", err)
					return
				}
			}
		}
	})
	receipts := make(chan goamqp.SendReceipt, 64)
	wg.Go(func() {
		for r := range receipts {
			if st, err := r.Wait(ctx); err != nil {
				errs <- fmt.Errorf("plain send outcome: %w", err)
				cancel()
			} else if _, ok := st.(*goamqp.StateAccepted); !ok {
				errs <- fmt.Errorf("plain send outcome: %T, want accepted", st)
				cancel()
			}
		}
	})
	var sendErr error
	for range n {
		r, err := snd.SendWithReceipt(ctx, &goamqp.Message{Data: [][]byte{body}}, nil)
		if err != nil {
			sendErr = fmt.Errorf("plain send: %w", err)
			break
		}
		receipts <- r
	}
	close(receipts)
	if sendErr != nil {
		cancel()
	}
	wg.Wait()
	close(errs)
	if err := errors.Join(sendErr, <-errs); err != nil {
		return AMQPFigures{}, err
	}
	fig := amqpFigures(n, len(body), raw, began, cpu0)
	fig.Stalls = stalls
	return fig, nil
}

// amqpLink carries n batches over a link session through queues named
// after link, from 4 pipelines (partitions), and checks that each arrives
// once and in order per partition.
func amqpLink(ctx context.Context, url, link string, batches []*transport.Batch, codec transport.Codec, n int, log *slog.Logger) (AMQPFigures, bool, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	addrs := amqp.AddressesFor(amqp.DefaultAddressPrefix, link, "v7-a", "hq-a")
	timing := amqp.Timing{IdleTimeout: 30 * time.Second}
	ln, err := amqp.Listen(amqp.ListenerOptions{
		Broker: amqp.Broker{URL: url}, Peers: []amqp.Peer{{Gateway: "v7-a", Addresses: addrs}}, Timing: timing, Logger: log,
		Accept: func(h *transport.Hello) (*transport.Welcome, error) {
			return &transport.Welcome{Gateway: "hq-a", Window: 64 << 20, MaxBatchBytes: 1 << 20}, nil
		},
	})
	if err != nil {
		return AMQPFigures{}, false, err
	}
	defer ln.Close()
	d, err := amqp.NewDialer(amqp.DialerOptions{Broker: amqp.Broker{URL: url}, Addresses: addrs, Codec: codec, Timing: timing, Logger: log})
	if err != nil {
		return AMQPFigures{}, false, err
	}
	hello := &transport.Hello{VersionMin: transport.VersionMin, VersionMax: transport.VersionMax, Gateway: "v7-a", Region: "v7",
		Legs: []string{"leg1"}, Codecs: []transport.Codec{transport.CodecZstd, transport.CodecS2, transport.CodecNone}}
	snd, err := d.Dial(ctx, "", hello)
	if err != nil {
		return AMQPFigures{}, false, err
	}
	defer snd.Close(nil)
	rcv, err := ln.Accept(ctx)
	if err != nil {
		return AMQPFigures{}, false, err
	}
	defer rcv.Close(nil)

	began, cpu0 := time.Now(), cpuTime()
	var wg sync.WaitGroup
	exact := true
	var rcvErr, ackErr error
	acked, received := make(chan struct{}), make(chan struct{})
	wg.Go(func() { // the receiving engine: "commit", then Ack 16 at a time
		defer close(received)
		next := make([]int64, amqpBenchPipelines) // per partition: the next offset expected
		var seqs []uint64
		for i := range n {
			f, err := rcv.Recv(ctx)
			if err != nil {
				rcvErr = fmt.Errorf("link receive after %d batches: %w", i, err)
				return
			}
			b := f.(*transport.Batch)
			if p := b.Partition; p < 0 || int(p) >= len(next) || b.NextOffset-int64(len(b.Records)) != next[p] {
				exact = false
			} else {
				next[p] = b.NextOffset
			}
			seqs = append(seqs, b.Seq)
			if len(seqs) == 16 || i == n-1 {
				if err := rcv.Send(ctx, &transport.Ack{Seqs: seqs}); err != nil {
					rcvErr = fmt.Errorf("link ack: %w", err)
					return
				}
				seqs = nil
			}
		}
	})
	wg.Go(func() { // the sending engine's side: every Ack comes back
		defer close(acked)
		got := 0
		for got < n {
			f, err := snd.Recv(ctx)
			if err != nil {
				ackErr = fmt.Errorf("link: %d of %d batches acknowledged: %w", got, n, err)
				return
			}
			if a, ok := f.(*transport.Ack); ok {
				got += len(a.Seqs)
			}
		}
	})
	var seq atomic.Uint64
	var senders sync.WaitGroup
	sendErrs := make([]error, amqpBenchPipelines)
	for p := range amqpBenchPipelines {
		senders.Go(func() {
			var off int64
			for i := p; i < n; i += amqpBenchPipelines {
				bt := *batches[i%len(batches)]
				bt.Partition = int32(p)
				bt.Seq = seq.Add(1)
				off += int64(len(bt.Records))
				bt.NextOffset = off
				if err := snd.Send(ctx, &bt); err != nil {
					sendErrs[p] = fmt.Errorf("link send: %w", err)
					cancel()
					return
				}
			}
		})
	}
	senders.Wait()
	<-acked
	fig := amqpFigures(n, 0, batches[0].RawSize(), began, cpu0)
	st := snd.Stats()
	fig.WireMBPerS = float64(st.WireBytes) / fig.Seconds / 1e6
	// The receiver's last Ack may reach the sender before the broker's
	// outcome of it reaches the receiver: let its Send return first.
	select {
	case <-received:
	case <-time.After(10 * time.Second):
	}
	cancel()
	wg.Wait()
	if err := errors.Join(append(sendErrs, rcvErr, ackErr)...); err != nil {
		return AMQPFigures{}, false, err
	}
	if h := rcv.(*amqp.Conn).Held(); h > 0 {
		return fig, false, fmt.Errorf("link: %d batch messages still held after every ack", h)
	}
	fig.Stalls = int(ln.Stats().FlowResent)
	return fig, exact, nil
}

// ParseCodecs parses a comma-separated list of link codecs.
func ParseCodecs(s string) ([]transport.Codec, error) {
	var out []transport.Codec
	for _, name := range strings.Split(s, ",") {
		c, err := transport.ParseCodec(strings.TrimSpace(name))
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}
