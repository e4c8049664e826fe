// Package amqpsink writes a route's records to the addresses of an AMQP
// 1.0 broker (a cluster of kind amqp as a route's destination): it
// implements mirror.Writer, the seam through which the receiver writes
// anything that is not Kafka.
//
// # Delivery
//
// Each record becomes a message (package mirror/cloudevents), durable (a
// broker that accepted it must keep it across its own restart), sent
// unsettled to the address its route's rename names (address prefix +
// destination topic); a shard's batches count as written only once the
// broker accepted every message of them, and only then is their progress
// kept and their Ack sent. Any other outcome fails the write: the sender
// resumes from the progress kept.
//
// # Progress and its limits
//
// An AMQP broker has no transaction that could hold the progress with the
// messages, so the progress (per source partition, the next offset) is
// kept in Options.StateDir, one file per leg and shard, written and
// fsynced after the broker's outcomes and read back when the shard opens
// (after any restart). A crash between the broker's acceptance and that
// write sends those messages again: delivery is at least once. Each
// message's message-id is its source position
// ("meridian:CLUSTER/TOPIC/PARTITION/OFFSET", or the record's
// meridian.amqp.message-id header), the same on every resend, so a broker
// with duplicate detection by message-id drops resends; RabbitMQ 3.10 has
// none.
//
// # Records that cannot map
//
// A record the mapping refuses (a header twice, a value or message larger
// than max_message_bytes, a structured record that does not decode) is sent
// to the cluster's dead-letter address as its value with the reason
// (application properties meridian_dl_reason, meridian_dl_source), or, with
// no dead-letter address, skipped; both are logged and counted
// (meridian_amqp_sink_unmapped_total{leg,action}), and the offset still
// counts as done.
//
// # Goroutines
//
// None of its own: go-amqp's connection goroutines, ended by Close (under
// a deadline, see transport/amqp on RabbitMQ 3.10's detach).
package amqpsink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	goamqp "github.com/Azure/go-amqp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/mirror"
	"github.com/meridian-gw/meridian/mirror/cloudevents"
	"github.com/meridian-gw/meridian/mirror/progress"
	"github.com/meridian-gw/meridian/routing"
	"github.com/meridian-gw/meridian/transport"
	"github.com/meridian-gw/meridian/transport/amqp"
)

// Cluster is one amqp cluster as the sink needs it.
type Cluster struct {
	Broker amqp.Broker
	// Prefix is put before a destination topic to make the address.
	Prefix string
	// DeadLetter is the name (under Prefix) of the dead-letter address;
	// "" = skip records that cannot map (logged, counted).
	DeadLetter string
	// Codec maps records to messages (its Address is set per address).
	Codec cloudevents.Options
}

// Options configure an Opener.
type Options struct {
	// Clusters by ref ("region/cluster").
	Clusters map[string]Cluster
	// StateDir keeps the progress; required.
	StateDir string
	// MaxInFlight bounds the messages awaiting the broker's outcome per
	// writer. Zero means 256.
	MaxInFlight int
	// CloseTimeout bounds closing a broker connection. Zero means 2 s.
	CloseTimeout time.Duration
	// Logger receives logs; nil discards them.
	Logger *slog.Logger
	// Registerer receives metrics; nil registers none.
	Registerer prometheus.Registerer
}

// Opener opens the writers of a gateway's legs into amqp clusters
// (mirror.Options.OpenWriter).
type Opener struct {
	o        Options
	log      *slog.Logger
	unmapped *prometheus.CounterVec // leg, action (dead-lettered, skipped)
}

// New checks o and returns its Opener.
func New(o Options) (*Opener, error) {
	if o.StateDir == "" {
		return nil, errors.New("amqp sink: a state directory is required to keep the progress")
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 256
	}
	if o.CloseTimeout <= 0 {
		o.CloseTimeout = 2 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	op := &Opener{o: o, log: o.Logger.With("component", "amqp-sink"),
		unmapped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_amqp_sink_unmapped_total",
			Help: "Records an AMQP sink could not map to a message, by action: dead-lettered, skipped.",
		}, []string{"leg", "action"})}
	if o.Registerer != nil {
		if err := o.Registerer.Register(op.unmapped); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				if c, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
					op.unmapped = c
				}
			}
		}
	}
	for ref, c := range o.Clusters {
		if _, err := cloudevents.New(c.Codec); err != nil {
			return nil, fmt.Errorf("cluster %s: %w", ref, err)
		}
	}
	return op, nil
}

// Open is a mirror.OpenWriter.
func (op *Opener) Open(ctx context.Context, leg *routing.Leg, shard int) (mirror.Writer, error) {
	c, ok := op.o.Clusters[leg.To.Ref()]
	if !ok {
		return nil, fmt.Errorf("no amqp cluster %s", leg.To.Ref())
	}
	ac, err := c.Broker.Dial(ctx)
	if err != nil {
		return nil, err
	}
	w := &writer{op: op, c: c, leg: leg, ac: ac, senders: map[string]*goamqp.Sender{}, codecs: map[string]*cloudevents.Codec{},
		path: filepath.Join(op.o.StateDir, fmt.Sprintf("amqp-sink-%s-%d.json", fileName(leg.ID), shard))}
	return w, nil
}

func fileName(s string) string {
	return strings.NewReplacer("/", "_", ":", "_", "\\", "_").Replace(s)
}

type writer struct {
	op      *Opener
	c       Cluster
	leg     *routing.Leg
	ac      *goamqp.Conn
	senders map[string]*goamqp.Sender // by address
	codecs  map[string]*cloudevents.Codec
	path    string
	kept    map[string]*progress.Record // "topic/partition" → latest
	once    sync.Once
}

var _ mirror.Writer = (*writer)(nil)

func key(k progress.TP) string { return fmt.Sprintf("%s/%d", k.Topic, k.Partition) }

func (w *writer) Committed(context.Context) (map[progress.TP]*progress.Record, error) {
	w.kept = map[string]*progress.Record{}
	data, err := os.ReadFile(w.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, err
	default:
		if err := json.Unmarshal(data, &w.kept); err != nil {
			return nil, fmt.Errorf("progress %s: %w", w.path, err)
		}
	}
	out := make(map[progress.TP]*progress.Record, len(w.kept))
	for _, r := range w.kept {
		if r.Leg == w.leg.ID {
			out[r.TP()] = r
		}
	}
	return out, nil
}

func (w *writer) sender(ctx context.Context, address string) (*goamqp.Sender, error) {
	if s := w.senders[address]; s != nil {
		return s, nil
	}
	ss, err := w.ac.NewSession(ctx, nil) // one AMQP session per link (RabbitMQ quirk)
	if err != nil {
		return nil, fmt.Errorf("amqp broker: begin session: %w", err)
	}
	s, err := ss.NewSender(ctx, address, nil)
	if err != nil {
		return nil, fmt.Errorf("address %s: %w", address, err)
	}
	w.senders[address] = s
	return s, nil
}

func (w *writer) codec(address string) (*cloudevents.Codec, error) {
	if c := w.codecs[address]; c != nil {
		return c, nil
	}
	o := w.c.Codec
	o.Address = address
	c, err := cloudevents.New(o)
	if err != nil {
		return nil, err
	}
	w.codecs[address] = c
	return c, nil
}

type inFlight struct {
	r       goamqp.SendReceipt
	address string
	id      string
}

func (w *writer) Write(ctx context.Context, batches []*transport.Batch, progs []*progress.Record) (int, error) {
	var pending []inFlight
	wait := func(n int) error {
		for len(pending) > n {
			f := pending[0]
			pending = pending[1:]
			st, err := f.r.Wait(ctx)
			if err != nil {
				return fmt.Errorf("address %s: message %s: %w", f.address, f.id, err)
			}
			if _, ok := st.(*goamqp.StateAccepted); !ok {
				return fmt.Errorf("address %s: message %s: outcome %T %+v, not accepted", f.address, f.id, st, st)
			}
		}
		return nil
	}
	dlq := 0
	for _, b := range batches {
		dest := w.leg.DestTopic(b.Topic)
		address := w.c.Prefix + dest
		snd, err := w.sender(ctx, address)
		if err != nil {
			return 0, err
		}
		codec, err := w.codec(address)
		if err != nil {
			return 0, err
		}
		for i := range b.Records {
			r := &b.Records[i]
			rec := &kgo.Record{Key: r.Key, Value: r.Value, Timestamp: time.UnixMilli(r.Timestamp)}
			for _, h := range r.Headers {
				rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
			}
			id := fmt.Sprintf("meridian:%s/%s/%d/%d", w.leg.From.Ref(), b.Topic, b.Partition, r.Offset)
			m, err := codec.Message(rec, id)
			if err != nil {
				if err := w.unmappable(ctx, b, r, id, err); err != nil {
					return 0, err
				}
				dlq++
				continue
			}
			// Durable: a broker that accepted it keeps it across a restart
			// (RabbitMQ drops non-persistent messages then, even from a
			// durable queue), or the committed offset would be a loss.
			m.Header = &goamqp.MessageHeader{Durable: true}
			receipt, err := snd.SendWithReceipt(ctx, m, nil)
			if err != nil {
				return 0, fmt.Errorf("address %s: send: %w", address, err)
			}
			pending = append(pending, inFlight{receipt, address, id})
			if err := wait(w.op.o.MaxInFlight); err != nil {
				return 0, err
			}
		}
	}
	if err := wait(0); err != nil {
		return 0, err
	}
	return dlq, w.keep(progs)
}

// unmappable dead-letters or skips a record the mapping refused.
func (w *writer) unmappable(ctx context.Context, b *transport.Batch, r *transport.Record, id string, cause error) error {
	log := w.op.log.With("leg", w.leg.ID, "topic", b.Topic, "partition", b.Partition, "offset", r.Offset, "err", cause)
	if w.c.DeadLetter == "" {
		w.op.unmapped.WithLabelValues(w.leg.ID, "skipped").Inc()
		log.Error("record cannot map to an AMQP message and there is no dead-letter address: skipped")
		return nil
	}
	address := w.c.Prefix + w.c.DeadLetter
	snd, err := w.sender(ctx, address)
	if err != nil {
		return err
	}
	m := &goamqp.Message{Header: &goamqp.MessageHeader{Durable: true}, Properties: &goamqp.MessageProperties{MessageID: id},
		ApplicationProperties: map[string]any{"meridian_dl_reason": cause.Error(),
			"meridian_dl_source": fmt.Sprintf("%s/%s/%d/%d", w.leg.From.Ref(), b.Topic, b.Partition, r.Offset)},
		Data: [][]byte{r.Value}}
	if err := snd.Send(ctx, m, nil); err != nil {
		return fmt.Errorf("dead-letter address %s: %w", address, err)
	}
	w.op.unmapped.WithLabelValues(w.leg.ID, "dead-lettered").Inc()
	log.Warn("record cannot map to an AMQP message: dead-lettered", "dead_letter", address)
	return nil
}

// keep writes progs into the progress file (write, fsync, rename).
func (w *writer) keep(progs []*progress.Record) error {
	if w.kept == nil {
		w.kept = map[string]*progress.Record{}
	}
	for _, p := range progs {
		w.kept[key(p.TP())] = p
	}
	data, err := json.Marshal(w.kept)
	if err != nil {
		return err
	}
	tmp := w.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("progress: %w", err)
	}
	_, werr := f.Write(data)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return fmt.Errorf("progress %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, w.path); err != nil {
		return fmt.Errorf("progress: %w", err)
	}
	if dir, err := os.Open(filepath.Dir(w.path)); err == nil {
		dir.Sync() //nolint:errcheck // best effort: the rename is what matters
		dir.Close()
	}
	return nil
}

func (w *writer) Close() error {
	w.once.Do(func() {
		done := make(chan struct{})
		go func() { w.ac.Close(); close(done) }() //nolint:errcheck // abandoned either way
		select {
		case <-done:
		case <-time.After(w.op.o.CloseTimeout):
			w.op.log.Warn("amqp connection close timed out; abandoned", "leg", w.leg.ID)
		}
	})
	return nil
}
