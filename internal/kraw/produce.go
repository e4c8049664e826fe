package kraw

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Retry bounds. A produce retries a batch on a retriable error (leader
// moved, partition not yet known, timeout, lost connection) up to
// produceTries times; adding partitions to the transaction retries
// CONCURRENT_TRANSACTIONS (the coordinator still finishing the previous
// transaction) and other retriable errors up to addTries times.
const (
	produceTries      = 10
	produceBackoff    = 100 * time.Millisecond
	produceMaxBackoff = time.Second
	addTries          = 20
	addBackoff        = 20 * time.Millisecond
	addMaxBackoff     = 500 * time.Millisecond

	produceTimeoutMillis = 30000
)

// PartitionBatches is the input and output of [TxnProducer.Produce] for one
// partition.
type PartitionBatches struct {
	Topic     string
	Partition int32

	// Batches are whole v2 record batches, each one that [Header.Raw]
	// accepts. Produce patches them in place with [PatchForProduce].
	Batches [][]byte

	// Base is set by a successful Produce: Base[i] is the offset of
	// the first record of Batches[i] at the destination, and the
	// batch's records have offsets Base[i], Base[i]+1, and so on.
	Base []int64
}

// ProduceError reports a batch that failed. Produce returns it, alone or
// joined with the others of the same round (see [errors.Join]), when a
// batch is invalid, when the broker rejects a batch with a non-retriable
// error, or when a retriable error outlasts the retries.
type ProduceError struct {
	Topic     string
	Partition int32
	Batch     int   // index into PartitionBatches.Batches
	Err       error // a *kerr.Error from the broker, or why the batch is invalid
}

func (e *ProduceError) Error() string {
	return fmt.Sprintf("kraw: produce %s[%d] batch %d: %v", e.Topic, e.Partition, e.Batch, e.Err)
}

func (e *ProduceError) Unwrap() error { return e.Err }

// TxnProducer writes whole v2 record batches into the open transaction of
// a kgo transactional client. The client must not produce to the same
// partitions itself.
//
// The client must keep transactions on the protocol before KIP-890 part 2
// (explicit AddPartitionsToTxn, no epoch bump at each commit): configure it
// with [ClientOpts].
//
// Per transaction the caller does:
//
//	cl.BeginTransaction()
//	p.Produce(ctx, parts)      // any number of times
//	cl.Produce(...)            // at least one record of its own, see below
//	cl.Flush(ctx)
//	p.EndTransaction(ctx, kgo.TryCommit)
//
// kgo's EndTransaction sends nothing to the broker when kgo itself wrote
// nothing in the transaction, which would leave the raw batches in an open
// transaction; every transaction in which Produce wrote must therefore
// also hold at least one record produced through the client (the mirror's
// progress record) or offsets committed through it.
//
// A TxnProducer is for one goroutine at a time.
type TxnProducer struct {
	cl    *kgo.Client
	txnID string

	mu     sync.Mutex
	id     int64 // producer ID and epoch seqs and added belong to
	epoch  int16
	seqs   map[partKey]int32 // next base sequence
	added  map[partKey]bool  // added to the open transaction
	failed error             // first error that made the producer unusable
}

type partKey struct {
	topic     string
	partition int32
}

// NewTxnProducer returns a producer of raw batches in the transactions of
// cl, which must be configured with transactionalID (kgo.TransactionalID)
// and acks -1 (the transactional default).
func NewTxnProducer(cl *kgo.Client, transactionalID string) *TxnProducer {
	return &TxnProducer{
		cl:    cl,
		txnID: transactionalID,
		id:    -1,
		epoch: -1,
		seqs:  make(map[partKey]int32),
		added: make(map[partKey]bool),
	}
}

// EndTransaction ends the client's open transaction like
// [kgo.Client.EndTransaction] (flush first) and forgets which partitions
// were added to it, so that the next Produce adds them to the next
// transaction. Use it instead of the client's EndTransaction, also for a
// TryAbort retry after a failed commit.
func (p *TxnProducer) EndTransaction(ctx context.Context, commit kgo.TransactionEndTry) error {
	err := p.cl.EndTransaction(ctx, commit)
	p.mu.Lock()
	clear(p.added)
	p.mu.Unlock()
	return err
}

// Produce writes each partition's batches, in order, in the client's open
// transaction and sets each partition's Base. The batches are patched in
// place with the producer's ID, epoch and sequence numbers; parts must
// name each partition once.
//
// Kafka takes one batch per partition in a produce request, so a
// partition's n batches take n round trips; the partitions of one leader
// share them, and different leaders are written in parallel. Retriable
// errors (leader moved, partition not yet known, timeout, lost connection)
// resend the same bytes, which idempotence deduplicates, a bounded number
// of times.
//
// A batch that [Header.Raw] rejects fails Produce with a *ProduceError
// before anything is sent, and the producer stays usable. Any other error
// leaves the transaction in an unknown state: the caller aborts it, closes
// the client and makes a new one (whose InitProducerID bumps the epoch and
// fences what is left), since this TxnProducer refuses all further
// produces. Errors wrap the broker's *kerr.Error, so errors.Is works (for
// example with kerr.MessageTooLarge or kerr.ProducerFenced); a failed batch
// is reported as a *ProduceError naming its partition and index.
func (p *TxnProducer) Produce(ctx context.Context, parts []PartitionBatches) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failed != nil {
		return fmt.Errorf("kraw: producer unusable after an earlier error: %w", p.failed)
	}
	if err := validate(parts); err != nil {
		return err
	}
	if err := p.produceLocked(ctx, parts); err != nil {
		p.failed = err
		return err
	}
	return nil
}

// validate checks every batch before anything is patched or sent.
func validate(parts []PartitionBatches) error {
	seen := make(map[partKey]bool, len(parts))
	for i := range parts {
		pb := &parts[i]
		k := partKey{pb.Topic, pb.Partition}
		if seen[k] {
			return &ProduceError{Topic: pb.Topic, Partition: pb.Partition, Batch: 0, Err: errors.New("partition listed twice")}
		}
		seen[k] = true
		for j, b := range pb.Batches {
			h, err := ParseHeader(b)
			switch {
			case err != nil:
			case h.Size() != len(b):
				err = fmt.Errorf("batch of %d bytes says it has %d", len(b), h.Size())
			case !h.Raw():
				err = fmt.Errorf("batch (magic %d, attributes %#x, %d records, last offset delta %d) cannot be produced raw", h.Magic, h.Attributes, h.Records, h.LastOffsetDelta)
			}
			if err != nil {
				return &ProduceError{Topic: pb.Topic, Partition: pb.Partition, Batch: j, Err: err}
			}
		}
	}
	return nil
}

func (p *TxnProducer) produceLocked(ctx context.Context, parts []PartitionBatches) error {
	empty := true
	for i := range parts {
		parts[i].Base = parts[i].Base[:0]
		empty = empty && len(parts[i].Batches) == 0
	}
	if empty {
		return nil
	}
	id, epoch, err := p.cl.ProducerID(ctx)
	if err != nil {
		return fmt.Errorf("kraw: producer ID: %w", err)
	}
	if id != p.id || epoch != p.epoch {
		// A new ID or epoch starts its sequences at zero, and cannot
		// be in a transaction the old one opened.
		p.id, p.epoch = id, epoch
		clear(p.seqs)
		clear(p.added)
	}

	// Number and patch the batches. The sequences are kept only if
	// everything succeeds; after a failure the producer is not used.
	next := make(map[partKey]int32, len(parts))
	var toAdd []partKey
	for i := range parts {
		pb := &parts[i]
		if len(pb.Batches) == 0 {
			continue
		}
		k := partKey{pb.Topic, pb.Partition}
		seq := p.seqs[k]
		for _, b := range pb.Batches {
			h, _ := ParseHeader(b) // validated
			if err := PatchForProduce(b, id, epoch, seq, true); err != nil {
				return err
			}
			seq = addSeq(seq, h.Records)
		}
		next[k] = seq
		if !p.added[k] {
			toAdd = append(toAdd, k)
		}
	}
	if err := p.addPartitionsLocked(ctx, id, epoch, toAdd); err != nil {
		return err
	}
	if err := p.sendAll(ctx, parts); err != nil {
		return err
	}
	for k, seq := range next {
		p.seqs[k] = seq
	}
	return nil
}

// addSeq returns seq advanced by n records, wrapping from MaxInt32 to 0 as
// Kafka does.
func addSeq(seq, n int32) int32 {
	if seq > math.MaxInt32-n {
		return n - (math.MaxInt32 - seq) - 1
	}
	return seq + n
}

// addPartitionsLocked adds keys to the open transaction with
// AddPartitionsToTxn (v3 and below: kgo pins it there for clients) sent
// through the client, which routes it to the transaction coordinator.
func (p *TxnProducer) addPartitionsLocked(ctx context.Context, id int64, epoch int16, keys []partKey) error {
	backoff := addBackoff
	var lastErr error
	for try := 0; len(keys) > 0; try++ {
		if try == addTries {
			return fmt.Errorf("kraw: add %d partitions to transaction %q: giving up after %d tries: %w", len(keys), p.txnID, addTries, lastErr)
		}
		if try > 0 {
			if err := sleep(ctx, backoff); err != nil {
				return fmt.Errorf("kraw: add partitions to transaction %q: %w", p.txnID, err)
			}
			backoff = min(2*backoff, addMaxBackoff)
		}

		req := kmsg.NewPtrAddPartitionsToTxnRequest()
		req.TransactionalID = p.txnID
		req.ProducerID = id
		req.ProducerEpoch = epoch
		byTopic := make(map[string]int)
		for _, k := range keys {
			i, ok := byTopic[k.topic]
			if !ok {
				i = len(req.Topics)
				byTopic[k.topic] = i
				rt := kmsg.NewAddPartitionsToTxnRequestTopic()
				rt.Topic = k.topic
				req.Topics = append(req.Topics, rt)
			}
			req.Topics[i].Partitions = append(req.Topics[i].Partitions, k.partition)
		}
		resp, err := req.RequestWith(ctx, p.cl)
		if err != nil {
			return fmt.Errorf("kraw: add partitions to transaction %q: %w", p.txnID, err)
		}
		for _, rt := range resp.Topics {
			for _, rp := range rt.Partitions {
				k := partKey{rt.Topic, rp.Partition}
				err := kerr.ErrorForCode(rp.ErrorCode)
				switch {
				case err == nil:
					p.added[k] = true
				case errors.Is(err, kerr.ConcurrentTransactions),
					errors.Is(err, kerr.OperationNotAttempted), // another partition failed
					kerr.IsRetriable(err):
					lastErr = fmt.Errorf("%s[%d]: %w", k.topic, k.partition, err)
				default:
					return fmt.Errorf("kraw: add %s[%d] to transaction %q: %w", k.topic, k.partition, p.txnID, err)
				}
			}
		}
		remaining := keys[:0]
		for _, k := range keys {
			if !p.added[k] {
				remaining = append(remaining, k)
			}
		}
		keys = remaining
		if lastErr == nil && len(keys) > 0 {
			lastErr = errors.New("partitions missing from the response")
		}
	}
	return nil
}

// sendState is the progress of one partition through sendAll.
type sendState struct {
	pb      *PartitionBatches
	next    int   // index of the next batch to send
	tries   int   // failed sends of that batch
	lastErr error // why the last send failed
}

// errNotSent is the outcome of a batch no request carried (a bug).
var errNotSent = errors.New("batch not sent")

// sendResult is the outcome of one batch send.
type sendResult struct {
	base  int64
	err   error
	retry bool // err is retriable
}

// sendAll writes every batch of parts. Kafka takes one batch per
// partition in a produce request (v3 and later reject more), so the
// batches go in rounds: round i sends the next batch of each partition,
// one request per leader, leaders in parallel. A batch that fails with a
// retriable error is resent, the same bytes with the same sequence, in
// the next round after a metadata refresh; idempotence drops a copy the
// broker already has.
func (p *TxnProducer) sendAll(ctx context.Context, parts []PartitionBatches) error {
	var states []*sendState
	for i := range parts {
		if len(parts[i].Batches) > 0 {
			states = append(states, &sendState{pb: &parts[i]})
		}
	}
	backoff := produceBackoff
	fresh := false // refresh metadata rather than use the cache
	for {
		pending := states[:0:0]
		for _, s := range states {
			if s.next < len(s.pb.Batches) {
				pending = append(pending, s)
			}
		}
		if len(pending) == 0 {
			return nil
		}

		results := make([]sendResult, len(pending))
		for i := range results {
			results[i] = sendResult{err: errNotSent, retry: true}
		}
		leaders := p.leaders(ctx, pending, fresh, results)
		var wg sync.WaitGroup
		for leader, idx := range leaders {
			wg.Go(func() { p.sendRound(ctx, leader, pending, idx, results) })
		}
		wg.Wait()

		var fatal []error
		retry := false
		for i, s := range pending {
			r := results[i]
			switch {
			case r.err == nil:
				s.pb.Base = append(s.pb.Base, r.base)
				s.next++
				s.tries = 0
			case r.retry && ctx.Err() == nil:
				s.tries++
				s.lastErr = r.err
				if s.tries >= produceTries {
					fatal = append(fatal, &ProduceError{Topic: s.pb.Topic, Partition: s.pb.Partition, Batch: s.next,
						Err: fmt.Errorf("giving up after %d tries: %w", s.tries, r.err)})
				}
				retry = true
			default:
				if err := ctx.Err(); err != nil && r.retry {
					r.err = err
				}
				fatal = append(fatal, &ProduceError{Topic: s.pb.Topic, Partition: s.pb.Partition, Batch: s.next, Err: r.err})
			}
		}
		switch len(fatal) {
		case 0:
		case 1:
			return fatal[0]
		default:
			return errors.Join(fatal...)
		}
		if retry {
			if err := sleep(ctx, backoff); err != nil {
				return fmt.Errorf("kraw: produce: %w", err)
			}
			backoff = min(2*backoff, produceMaxBackoff)
			fresh = true
		}
	}
}

// leaderInfo is what sendRound needs about a leader's partitions.
type leaderInfo struct {
	idx      []int // indexes into pending
	topicIDs map[string][16]byte
}

// leaders groups pending by partition leader. A partition without a
// leader gets a retriable or fatal error in results instead.
func (p *TxnProducer) leaders(ctx context.Context, pending []*sendState, fresh bool, results []sendResult) map[int32]*leaderInfo {
	req := kmsg.NewPtrMetadataRequest()
	seen := make(map[string]bool)
	for _, s := range pending {
		if !seen[s.pb.Topic] {
			seen[s.pb.Topic] = true
			rt := kmsg.NewMetadataRequestTopic()
			rt.Topic = kmsg.StringPtr(s.pb.Topic)
			req.Topics = append(req.Topics, rt)
		}
	}
	limit := time.Duration(0) // the client's MetadataMinAge
	if fresh {
		limit = time.Millisecond
	}
	meta, err := p.cl.RequestCachedMetadata(ctx, req, limit)
	if err != nil {
		for i := range results {
			results[i] = sendResult{err: fmt.Errorf("metadata: %w", err), retry: true}
		}
		return nil
	}

	type topicMeta struct {
		err   error
		id    [16]byte
		parts map[int32]kmsg.MetadataResponseTopicPartition
	}
	topics := make(map[string]topicMeta, len(meta.Topics))
	for _, t := range meta.Topics {
		if t.Topic == nil {
			continue
		}
		tm := topicMeta{err: kerr.ErrorForCode(t.ErrorCode), id: t.TopicID, parts: make(map[int32]kmsg.MetadataResponseTopicPartition, len(t.Partitions))}
		for _, mp := range t.Partitions {
			tm.parts[mp.Partition] = mp
		}
		topics[*t.Topic] = tm
	}

	out := make(map[int32]*leaderInfo)
	for i, s := range pending {
		tm, ok := topics[s.pb.Topic]
		var err error
		switch {
		case !ok:
			err = kerr.UnknownTopicOrPartition
		case tm.err != nil:
			err = tm.err
		}
		if err == nil {
			mp, ok := tm.parts[s.pb.Partition]
			switch {
			case !ok:
				err = kerr.UnknownTopicOrPartition
			case mp.Leader < 0:
				if err = kerr.ErrorForCode(mp.ErrorCode); err == nil {
					err = kerr.LeaderNotAvailable
				}
			default:
				li := out[mp.Leader]
				if li == nil {
					li = &leaderInfo{topicIDs: make(map[string][16]byte)}
					out[mp.Leader] = li
				}
				li.idx = append(li.idx, i)
				li.topicIDs[s.pb.Topic] = tm.id
				continue
			}
		}
		results[i] = sendResult{err: fmt.Errorf("metadata: %w", err), retry: kerr.IsRetriable(err)}
	}
	return out
}

// sendRound sends the next batch of each pending[i], i in li.idx, to
// leader in one produce request and stores each outcome in results[i].
func (p *TxnProducer) sendRound(ctx context.Context, leader int32, pending []*sendState, li *leaderInfo, results []sendResult) {
	req := kmsg.NewPtrProduceRequest()
	req.TransactionID = kmsg.StringPtr(p.txnID)
	req.Acks = -1 // kgo requires the client's acks; transactions need all
	req.TimeoutMillis = produceTimeoutMillis
	byTopic := make(map[string]int)
	for _, i := range li.idx {
		s := pending[i]
		ti, ok := byTopic[s.pb.Topic]
		if !ok {
			ti = len(req.Topics)
			byTopic[s.pb.Topic] = ti
			rt := kmsg.NewProduceRequestTopic()
			rt.Topic = s.pb.Topic
			rt.TopicID = li.topicIDs[s.pb.Topic] // v13+
			req.Topics = append(req.Topics, rt)
		}
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Partition = s.pb.Partition
		rp.Records = s.pb.Batches[s.next]
		req.Topics[ti].Partitions = append(req.Topics[ti].Partitions, rp)
	}

	kresp, err := p.cl.Broker(int(leader)).Request(ctx, req)
	if err != nil {
		// The request may or may not have been written; a resend of
		// the same sequence is deduplicated.
		for _, i := range li.idx {
			results[i] = sendResult{err: fmt.Errorf("broker %d: %w", leader, err), retry: true}
		}
		return
	}
	resp := kresp.(*kmsg.ProduceResponse)

	got := make(map[respPart]*kmsg.ProduceResponseTopicPartition)
	for ti := range resp.Topics {
		rt := &resp.Topics[ti]
		for pi := range rt.Partitions {
			rp := &rt.Partitions[pi]
			got[respPartOf(rt.Topic, rt.TopicID, rp.Partition)] = rp
		}
	}
	for _, i := range li.idx {
		s := pending[i]
		rp := got[respPart{topic: s.pb.Topic, partition: s.pb.Partition}]
		if rp == nil {
			rp = got[respPart{id: li.topicIDs[s.pb.Topic], partition: s.pb.Partition}]
		}
		if rp == nil {
			results[i] = sendResult{err: fmt.Errorf("broker %d: partition missing from the produce response", leader), retry: true}
			continue
		}
		if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
			if rp.ErrorMessage != nil && *rp.ErrorMessage != "" {
				err = fmt.Errorf("%w: %s", err, *rp.ErrorMessage)
			}
			results[i] = sendResult{err: err, retry: retriable(err)}
			continue
		}
		results[i] = sendResult{base: rp.BaseOffset}
	}
}

// retriable reports a produce error worth resending the same batch for.
// CORRUPT_MESSAGE is retriable in Kafka's list (corruption in transit),
// but here the bytes were checked and a resend would only repeat it.
func retriable(err error) bool {
	return kerr.IsRetriable(err) && !errors.Is(err, kerr.CorruptMessage)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
