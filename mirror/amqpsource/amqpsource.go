// Package amqpsource reads the addresses of an AMQP 1.0 broker (a cluster
// of kind amqp) as a route's source: it implements mirror.Source, the seam
// through which the sender pump reads anything that is not Kafka.
//
// # Positions
//
// An address is a topic with one partition, 0. Its records are numbered
// by the source: the first message received gets the position the
// destination's progress says comes next (0 at first), and each message
// mapped to a record takes the next one. The destination's progress, offset
// map and Resume therefore work as for a Kafka partition, with the
// sender's sequence in place of Kafka offsets.
//
// # Settlement and de-duplication
//
// A message is received with link credit (Options.Credit per address,
// granted by hand as messages are settled, so the messages held unsettled
// never exceed it, plus at most a quarter more: after 2 s without a
// delivery one credit more is granted, for RabbitMQ 3.10's lost credit (see
// transport/amqp), and repaid from the next settlements; the engine's
// credit window bounds their bytes on the link). It is accepted only when the sender's Ack says the destination
// transaction that holds it committed (Source.Committed). After a Resume,
// a broker restart or a gateway restart the broker delivers again what was
// not accepted, some of it already committed. The source keeps, per
// leg and address, the position it gave each message-id (dedup.go): a
// message whose id had a position below the committed one is accepted and
// not sent again. That state lives in memory for the gateway's life, and,
// with Options.StateDir, in a file per leg written (and fsynced) before
// the records it names go to the link, so it survives a restart of the
// gateway on the same disk. It holds at most twice the credit per
// address. Messages without a message-id cannot be told apart: they are
// at least once (counted as outcome "no-id"). The check applies to every
// message received, not only to those the broker marks redelivered, so two
// different messages with the same message-id within that window count as
// one (the second is settled unsent, outcome "duplicate"): message-ids must
// be unique, as AMQP says they should.
//
// # Poison messages
//
// A message that does not map (package mirror/cloudevents: no key
// property, undecodable, too large) goes to the cluster's dead-letter
// address with the reason in its application properties
// (meridian_dl_reason, meridian_dl_address) and is accepted once the
// broker accepted the copy; without a dead-letter address, or when the copy
// is refused, it is rejected with the reason in the AMQP error. Nothing is
// dropped silently and nothing holds the address: counted in
// meridian_amqp_source_messages_total{outcome} and
// meridian_amqp_source_poison_total{reason}.
//
// # Goroutines
//
// A Source owns, per address, a receiver goroutine (receive, map, number,
// hand to Next) and a settler (accepts what Committed says, returns
// credit); Close cancels them, closes the broker connection (under a
// deadline: RabbitMQ 3.10's link detach can block go-amqp, see
// transport/amqp) and waits for them.
package amqpsource

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"time"

	goamqp "github.com/Azure/go-amqp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/mirror"
	"github.com/meridian-gw/meridian/mirror/cloudevents"
	"github.com/meridian-gw/meridian/routing"
	"github.com/meridian-gw/meridian/transport/amqp"
)

// Cluster is one amqp cluster as the source needs it.
type Cluster struct {
	Broker amqp.Broker
	// Prefix is put before an address name to make the broker address.
	Prefix string
	// Addresses are the names of the cluster's addresses (topics).
	Addresses []string
	// DeadLetter is the name (under Prefix) of the dead-letter address;
	// "" = reject poison messages.
	DeadLetter string
	// Codec maps its messages (its Address is set per address).
	Codec cloudevents.Options
}

// Options configure an Opener. Zero values are documented per field.
type Options struct {
	// Clusters by ref ("region/cluster"). A leg from another cluster
	// fails to open.
	Clusters map[string]Cluster
	// Credit is the messages each address may hold unsettled. Zero means
	// 256.
	Credit int
	// MaxBatch is the most messages handed to the sender at once. Zero
	// means 256.
	MaxBatch int
	// StateDir is where each leg's de-duplication state is kept across
	// gateway restarts ("" = in memory only: redeliveries after a
	// gateway restart are written again).
	StateDir string
	// CloseTimeout bounds closing a broker connection. Zero means 2 s.
	CloseTimeout time.Duration
	// Logger receives logs; nil discards them.
	Logger *slog.Logger
	// Registerer receives metrics; nil registers none.
	Registerer prometheus.Registerer
}

// Opener opens the sources of a gateway's legs from amqp clusters
// (mirror.Options.OpenSource). It keeps each leg's de-duplication state
// between the sources it opens.
type Opener struct {
	o      Options
	log    *slog.Logger
	m      *metrics
	mu     sync.Mutex
	dedups map[string]*dedup // leg ID → state
	codecs map[string]*cloudevents.Codec
}

// New checks o and returns its Opener.
func New(o Options) (*Opener, error) {
	if o.Credit <= 0 {
		o.Credit = 256
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = 256
	}
	if o.CloseTimeout <= 0 {
		o.CloseTimeout = 2 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	op := &Opener{o: o, log: o.Logger.With("component", "amqp-source"), m: newMetrics(o.Registerer),
		dedups: map[string]*dedup{}, codecs: map[string]*cloudevents.Codec{}}
	for ref, c := range o.Clusters {
		for _, name := range c.Addresses {
			co := c.Codec
			co.Address = c.Prefix + name
			codec, err := cloudevents.New(co)
			if err != nil {
				return nil, fmt.Errorf("cluster %s address %s: %w", ref, name, err)
			}
			op.codecs[ref+"\x00"+name] = codec
		}
	}
	return op, nil
}

// Open is a mirror.OpenSource.
func (op *Opener) Open(ctx context.Context, leg *routing.Leg, next map[string]int64) (mirror.Source, error) {
	ref := leg.From.Ref()
	c, ok := op.o.Clusters[ref]
	if !ok {
		return nil, fmt.Errorf("no amqp cluster %s", ref)
	}
	dd, err := op.dedup(leg.ID)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, n := range c.Addresses {
		if leg.Match(n) {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("route %s matches none of the addresses of %s", leg.Route.Name, ref)
	}
	ac, err := c.Broker.Dial(ctx)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(context.Background())
	s := &source{op: op, leg: leg.ID, ac: ac, cancel: cancel, out: make(chan ready), dedup: dd, failed: make(chan error, 1)}
	fail := func(err error) (mirror.Source, error) {
		s.Close()
		return nil, err
	}
	if c.DeadLetter != "" {
		ss, err := ac.NewSession(ctx, nil)
		if err != nil {
			return fail(fmt.Errorf("amqp broker: begin session: %w", err))
		}
		dl := c.Prefix + c.DeadLetter
		if s.dl, err = ss.NewSender(ctx, dl, nil); err != nil {
			return fail(fmt.Errorf("dead-letter address %s: %w", dl, err))
		}
		s.dlAddr = dl
	}
	for _, name := range names {
		ss, err := ac.NewSession(ctx, nil) // one AMQP session per link (RabbitMQ quirk)
		if err != nil {
			return fail(fmt.Errorf("amqp broker: begin session: %w", err))
		}
		address := c.Prefix + name
		r, err := ss.NewReceiver(ctx, address, &goamqp.ReceiverOptions{Credit: -1})
		if err != nil {
			return fail(fmt.Errorf("address %s: %w", address, err))
		}
		if err := r.IssueCredit(uint32(op.o.Credit)); err != nil {
			return fail(fmt.Errorf("address %s: issue credit: %w", address, err))
		}
		a := &addr{s: s, name: name, address: address, r: r, codec: op.codecs[ref+"\x00"+name],
			next: next[name], committed: next[name], wake: make(chan struct{}, 1)}
		dd.resume(name, a.next)
		s.addrs = append(s.addrs, a)
	}
	if err := dd.sync(); err != nil {
		return fail(err)
	}
	for _, a := range s.addrs {
		s.wg.Go(func() { s.report(a.receive(sctx)) })
		s.wg.Go(func() { s.report(a.settle(sctx)) })
	}
	op.log.Info("reading amqp addresses", "leg", leg.ID, "addresses", strings.Join(names, ","), "dead_letter", s.dlAddr)
	return s, nil
}

func (op *Opener) dedup(leg string) (*dedup, error) {
	op.mu.Lock()
	defer op.mu.Unlock()
	if d := op.dedups[leg]; d != nil {
		return d, nil
	}
	path := ""
	if op.o.StateDir != "" {
		path = filepath.Join(op.o.StateDir, "amqp-dedup-"+fileName(leg)+".json")
	}
	d, err := newDedup(path, 2*int64(op.o.Credit))
	if err != nil {
		return nil, err
	}
	op.dedups[leg] = d
	return d, nil
}

// fileName makes a leg ID ("route:region/cluster") a file name.
func fileName(s string) string {
	return strings.NewReplacer("/", "_", ":", "_", "\\", "_").Replace(s)
}

// ready is a run of records of one address for Next.
type ready struct {
	topic string
	recs  []*kgo.Record
}

type source struct {
	op     *Opener
	leg    string
	ac     *goamqp.Conn
	cancel context.CancelFunc
	wg     sync.WaitGroup
	addrs  []*addr
	out    chan ready
	failed chan error // the first goroutine's error
	dedup  *dedup
	dl     *goamqp.Sender // nil: no dead-letter address
	dlAddr string
	once   sync.Once
	dlMu   sync.Mutex // one dead-letter send at a time
}

var _ mirror.Source = (*source)(nil)

func (s *source) report(err error) {
	if err == nil {
		return
	}
	select {
	case s.failed <- err:
	default:
	}
}

func (s *source) Topics() []string {
	out := make([]string, len(s.addrs))
	for i, a := range s.addrs {
		out[i] = a.name
	}
	return out
}

func (s *source) Next(ctx context.Context) (string, []*kgo.Record, error) {
	select {
	case <-ctx.Done():
		return "", nil, ctx.Err()
	case err := <-s.failed:
		return "", nil, err
	case r := <-s.out:
		return r.topic, r.recs, nil
	}
}

func (s *source) Committed(topic string, next int64) {
	for _, a := range s.addrs {
		if a.name == topic {
			a.commit(next)
		}
	}
}

func (s *source) Close() error {
	s.once.Do(func() {
		s.cancel()
		ctx, cancel := context.WithTimeout(context.Background(), s.op.o.CloseTimeout)
		defer cancel()
		done := make(chan struct{})
		go func() { s.ac.Close(); close(done) }() //nolint:errcheck // the connection is abandoned either way
		select {
		case <-done:
		case <-ctx.Done():
			s.op.log.Warn("amqp connection close timed out; abandoned", "leg", s.leg)
		}
		s.wg.Wait()
	})
	return nil
}

// idleReflow is how long an address may deliver nothing before the
// receiver grants one credit more (see receive).
const idleReflow = 2 * time.Second

// held is a message received, numbered and sent, not yet accepted.
type held struct {
	pos int64
	msg *goamqp.Message
}

// addr is one address of a source.
type addr struct {
	s       *source
	name    string // the topic
	address string // the broker's address
	r       *goamqp.Receiver
	codec   *cloudevents.Codec

	mu        sync.Mutex
	next      int64  // position of the next record (receive's only)
	held      []held // in position order
	committed int64  // every position below it is committed
	extra     int    // credit granted beyond Options.Credit, repaid by credit
	wake      chan struct{}
}

// receive takes messages from the broker, maps and numbers them and hands
// them to Next, until ctx ends or the link fails.
func (a *addr) receive(ctx context.Context) error {
	m := a.s.op.m
	for {
		rctx, cancel := context.WithTimeout(ctx, idleReflow)
		msg, err := a.r.Receive(rctx, nil)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, context.DeadlineExceeded) {
				// RabbitMQ 3.10 can lose track of credit with messages
				// ready (transport/amqp's doc): one credit more makes it
				// deliver again. The extra credit is repaid from the next
				// settlements (credit), and at most a quarter of the
				// credit is extra at a time.
				if a.borrow() {
					if err := a.r.IssueCredit(1); err != nil {
						return fmt.Errorf("issue credit on %s: %w", a.address, err)
					}
				}
				continue
			}
			return fmt.Errorf("receive from %s: %w", a.address, err)
		}
		msgs := []*goamqp.Message{msg}
		for len(msgs) < a.s.op.o.MaxBatch {
			p := a.r.Prefetched()
			if p == nil {
				break
			}
			msgs = append(msgs, p)
		}
		var recs []*kgo.Record
		settled := 0
		for _, msg := range msgs {
			m.messages.WithLabelValues(a.s.leg, "received").Inc()
			id, hasID := cloudevents.MessageID(msg)
			a.mu.Lock()
			committed := a.committed
			a.mu.Unlock()
			if hasID && a.s.dedup.committed(a.name, id, committed) {
				// Committed before a restart or Resume: settle, do not send.
				if err := a.r.AcceptMessage(ctx, msg); err != nil {
					return fmt.Errorf("accept %s: %w", a.address, err)
				}
				m.messages.WithLabelValues(a.s.leg, "duplicate").Inc()
				settled++
				continue
			}
			rec, err := a.codec.Record(msg)
			if err != nil {
				if err := a.poison(ctx, msg, err); err != nil {
					return err
				}
				settled++
				continue
			}
			if !hasID {
				m.messages.WithLabelValues(a.s.leg, "no-id").Inc()
			}
			rec.Topic, rec.Partition, rec.Offset = a.name, 0, a.next
			if hasID {
				a.s.dedup.add(a.name, id, a.next)
			}
			a.mu.Lock()
			a.held = append(a.held, held{a.next, msg})
			a.mu.Unlock()
			a.next++
			recs = append(recs, rec)
		}
		if err := a.credit(settled); err != nil {
			return err
		}
		if len(recs) == 0 {
			continue
		}
		// The positions given must be on disk before the records can be
		// committed: a restart then knows them when the broker redelivers.
		if err := a.s.dedup.sync(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case a.s.out <- ready{a.name, recs}:
		}
	}
}

// poison dead-letters or rejects a message that does not map.
func (a *addr) poison(ctx context.Context, msg *goamqp.Message, cause error) error {
	m := a.s.op.m
	var ce *cloudevents.Error
	reason, cond := "undecodable", goamqp.ErrCondDecodeError
	if errors.As(cause, &ce) {
		reason, cond = ce.ReasonLabel(), ce.Condition()
	}
	m.poison.WithLabelValues(a.s.leg, reason).Inc()
	log := a.s.op.log.With("leg", a.s.leg, "address", a.address, "reason", reason, "err", cause)
	if a.s.dl != nil {
		dl := &goamqp.Message{Header: msg.Header, Annotations: msg.Annotations, Properties: msg.Properties,
			ApplicationProperties: make(map[string]any, len(msg.ApplicationProperties)+2),
			Data:                  msg.Data, Value: msg.Value, Sequence: msg.Sequence}
		for k, v := range msg.ApplicationProperties {
			dl.ApplicationProperties[k] = v
		}
		dl.ApplicationProperties["meridian_dl_reason"] = cause.Error()
		dl.ApplicationProperties["meridian_dl_address"] = a.address
		a.s.dlMu.Lock()
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := a.s.dl.Send(sctx, dl, nil)
		cancel()
		a.s.dlMu.Unlock()
		if err == nil {
			if err := a.r.AcceptMessage(ctx, msg); err != nil {
				return fmt.Errorf("accept %s: %w", a.address, err)
			}
			m.messages.WithLabelValues(a.s.leg, "dead-lettered").Inc()
			log.Warn("poison message dead-lettered", "dead_letter", a.s.dlAddr)
			return nil
		}
		log = log.With("dead_letter_err", err)
	}
	if err := a.r.RejectMessage(ctx, msg, &goamqp.Error{Condition: cond, Description: cause.Error()}); err != nil {
		return fmt.Errorf("reject on %s: %w", a.address, err)
	}
	m.messages.WithLabelValues(a.s.leg, "rejected").Inc()
	log.Warn("poison message rejected")
	return nil
}

// borrow takes one extra credit if fewer than a quarter of the credit
// are extra now.
func (a *addr) borrow() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.extra >= max(1, a.s.op.o.Credit/4) {
		return false
	}
	a.extra++
	return true
}

// credit returns the credit of n settled messages to the broker, less
// what repays extra credit.
func (a *addr) credit(n int) error {
	a.mu.Lock()
	repay := min(n, a.extra)
	a.extra -= repay
	a.mu.Unlock()
	if n-repay == 0 {
		return nil
	}
	if err := a.r.IssueCredit(uint32(n - repay)); err != nil {
		return fmt.Errorf("issue credit on %s: %w", a.address, err)
	}
	return nil
}

// commit records that positions below next are committed and wakes the
// settler; it never blocks (it runs on the session's receive loop).
func (a *addr) commit(next int64) {
	a.mu.Lock()
	if next > a.committed {
		a.committed = next
	}
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// settle accepts the held messages below the committed position, in
// order, and returns their credit, until ctx ends.
func (a *addr) settle(ctx context.Context) error {
	m := a.s.op.m
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.wake:
		}
		a.mu.Lock()
		n := 0
		for n < len(a.held) && a.held[n].pos < a.committed {
			n++
		}
		done := append([]held(nil), a.held[:n]...)
		a.held = a.held[n:]
		committed := a.committed
		a.mu.Unlock()
		for _, h := range done {
			if err := a.r.AcceptMessage(ctx, h.msg); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("accept %s: %w", a.address, err)
			}
		}
		if len(done) > 0 {
			m.messages.WithLabelValues(a.s.leg, "accepted").Add(float64(len(done)))
			if err := a.credit(len(done)); err != nil {
				return err
			}
		}
		a.s.dedup.prune(a.name, committed)
	}
}

type metrics struct {
	messages *prometheus.CounterVec // leg, outcome
	poison   *prometheus.CounterVec // leg, reason
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_amqp_source_messages_total",
			Help: "Messages of AMQP source addresses by outcome: received, accepted (committed at the destination), duplicate (committed before, settled unsent), no-id (sent, cannot be de-duplicated), dead-lettered, rejected.",
		}, []string{"leg", "outcome"}),
		poison: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_amqp_source_poison_total",
			Help: "AMQP source messages that do not map to a record, by reason: missing-key, undecodable, too-large.",
		}, []string{"leg", "reason"}),
	}
	if reg != nil {
		register(reg, &m.messages)
		register(reg, &m.poison)
	}
	return m
}

func register(reg prometheus.Registerer, c **prometheus.CounterVec) {
	err := reg.Register(*c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
			*c = existing
		}
	}
}
