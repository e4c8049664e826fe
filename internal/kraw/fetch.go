package kraw

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
)

// ClientOpts are the kgo options a client used with this package needs:
// request versions capped so that Fetch carries topic names (v12), and so
// that kgo runs transactions on the pre-KIP-890 protocol: explicit
// AddPartitionsToTxn (v3 at most), Produce v11 at most and EndTxn v4 at
// most, which never bumps the producer epoch on commit. kgo only takes its
// KIP-890 part 2 path when the MaxVersions cap allows Produce v12, EndTxn
// v5 and TxnOffsetCommit v5 (Client.supportsKIP890p2), and it clamps every
// request to the cap (broker.handleReq).
func ClientOpts() []kgo.Opt {
	v := kversion.Stable()
	v.SetMaxKeyVersion(kmsg.Fetch.Int16(), 12)
	v.SetMaxKeyVersion(kmsg.Produce.Int16(), 11)
	v.SetMaxKeyVersion(kmsg.EndTxn.Int16(), 4)
	v.SetMaxKeyVersion(kmsg.AddPartitionsToTxn.Int16(), 3)
	return []kgo.Opt{kgo.MaxVersions(v)}
}

// Offsets that Fetcher.Add resolves with a ListOffsets request.
const (
	// AtStart is the partition's log start offset.
	AtStart int64 = -2
	// AtEnd is the partition's last stable offset: the end of the log as
	// a read_committed consumer sees it.
	AtEnd int64 = -1
)

// ErrClosed is returned by Poll once the fetcher is closed.
var ErrClosed = errors.New("kraw: fetcher closed")

// FetchOptions configure a Fetcher. Zero values pick the defaults named on
// each field.
type FetchOptions struct {
	// MaxBytes bounds a fetch response (Kafka may exceed it to return one
	// whole batch). Zero or less: 8 MiB.
	MaxBytes int32
	// MaxPartitionBytes bounds the data of one partition in a response
	// (Kafka may exceed it to return one whole batch). Zero or less: 1 MiB.
	MaxPartitionBytes int32
	// MaxWait is how long a broker holds a fetch that has no data yet.
	// Zero or less: 250ms.
	MaxWait time.Duration
	// ResetToEnd restarts a partition whose offset is out of range at its
	// last stable offset. False: at its log start offset.
	ResetToEnd bool
	// Logger receives warnings about out-of-range offsets and failing
	// partitions. Nil: logs are discarded.
	Logger *slog.Logger
}

// PartitionFetch is what one fetch returned for one partition.
type PartitionFetch struct {
	Topic     string
	Partition int32

	// From is the offset this fetch asked for: the partition's previous
	// Next, or where the partition started after Add, or where it
	// restarted after its offset was out of range (a warning is logged
	// then; a From that is not the previous Next marks that gap).
	From int64
	// Next is the offset to fetch next: the offset after the last batch
	// in Batches, skipped ones included. Every offset below Next was
	// delivered, skipped, or (compaction) never existed.
	Next int64

	// HighWatermark, LastStable and LogStart are the partition's offsets
	// as the leader reported them with this fetch.
	HighWatermark int64
	LastStable    int64
	LogStart      int64

	// Batches are the complete record batches of the fetch in offset
	// order, all of them below LastStable, none of them ending before
	// From. It is never empty.
	Batches []Batch
}

// Batch is one record batch of a fetch response, exactly as the broker sent
// it.
type Batch struct {
	Header Header
	// Bytes is the whole batch as fetched: not copied, not decompressed,
	// its CRC checked (for message format v2). It shares memory with the
	// rest of the response and stays valid as long as the caller keeps it.
	Bytes []byte
	// Skip marks a batch with nothing to mirror: a control batch
	// (transaction marker), a data batch of an aborted transaction, or a
	// batch emptied by compaction. It still moves Next.
	Skip bool
	// From is the lowest offset of the batch that the caller has not
	// seen. It is Header.BaseOffset unless the batch straddles the fetch
	// offset: brokers return whole batches, so the first batch of a
	// fetch may start before the offset asked for, and then From is that
	// offset and the records below it were already delivered. Such a
	// batch must not be forwarded raw (Raw reports false): decode it and
	// keep the records at From or above, for example with
	// kgo.ProcessFetchPartition and ProcessFetchPartitionOpts.Offset set
	// to From. For message formats v0 and v1, whose compressed sets carry
	// the offset of their last record, From is only a lower bound, so
	// always decode them with that Offset.
	From int64
}

// Raw reports whether the batch can be mirrored byte for byte: it is not
// skipped, Header.Raw holds, and it holds no record the caller has already
// seen. Any other batch that is not skipped must be decoded.
func (b *Batch) Raw() bool {
	return !b.Skip && b.Header.Raw() && b.From == b.Header.BaseOffset
}

// Fetcher reads record batches of partitions of one cluster, read_committed,
// through the connections of a kgo client. It runs a goroutine per leader
// broker, each with one fetch in flight; a partition is fetched again only
// after Poll has returned its previous result, so memory stays bounded and
// each partition's results come in offset order.
//
// A failing partition is never dropped: it is retried with a backoff
// (100ms doubling to 2s) after a metadata refresh where the error says the
// leader moved, and restarted at its log start (or end, see
// FetchOptions.ResetToEnd) if its offset is out of range.
//
// Fields behind mu are shared by Add, Poll and the goroutines; mu is the
// only lock and no call into kgo is made while holding it.
type Fetcher struct {
	cl  *kgo.Client
	o   FetchOptions
	log *slog.Logger

	ctx       context.Context // canceled by Close
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once

	ready      chan struct{} // cap 1: results were added
	manageWake chan struct{} // cap 1: a partition needs a leader or an offset

	mu      sync.Mutex
	closed  bool
	parts   map[topicPartition]*fetchPart
	loops   map[int32]chan struct{} // running fetch loops by broker, with their wake channels
	results []PartitionFetch
}

type topicPartition struct {
	topic     string
	partition int32
}

// fetchPart is the state of one added partition, guarded by Fetcher.mu.
type fetchPart struct {
	topicPartition
	topicID [16]byte

	// offset is the next offset to fetch, or AtStart or AtEnd while it
	// must be looked up.
	offset int64
	// leader is the partition's leader broker, -1 until metadata names
	// it; epoch is its leader epoch from the same metadata.
	leader int32
	epoch  int32
	// maxBytes is the partition's byte limit for the next fetch; it
	// grows while a fetch returns no complete batch.
	maxBytes int32
	// busy is set while the partition is in a fetch or its result waits
	// for Poll.
	busy bool

	failures int
	retryAt  time.Time
}

const (
	defaultMaxBytes          = 8 << 20
	defaultMaxPartitionBytes = 1 << 20
	defaultMaxWait           = 250 * time.Millisecond
	// maxGrownBytes caps how far a partition's byte limit grows when a
	// fetch returns no complete batch.
	maxGrownBytes = 1 << 30

	minRetryBackoff = 100 * time.Millisecond
	maxRetryBackoff = 2 * time.Second
)

// NewFetcher returns a fetcher reading through cl, which should be built
// with ClientOpts. It starts with no partitions; see Add. Close it to stop
// its goroutines; closing cl is the caller's business.
func NewFetcher(cl *kgo.Client, o FetchOptions) *Fetcher {
	if o.MaxBytes <= 0 {
		o.MaxBytes = defaultMaxBytes
	}
	if o.MaxPartitionBytes <= 0 {
		o.MaxPartitionBytes = defaultMaxPartitionBytes
	}
	if o.MaxWait <= 0 {
		o.MaxWait = defaultMaxWait
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &Fetcher{
		cl:         cl,
		o:          o,
		log:        log,
		ctx:        ctx,
		cancel:     cancel,
		ready:      make(chan struct{}, 1),
		manageWake: make(chan struct{}, 1),
		parts:      make(map[topicPartition]*fetchPart),
		loops:      make(map[int32]chan struct{}),
	}
	f.wg.Go(f.manage)
	return f
}

// Add starts fetching a partition at offset, which is an offset (>= 0),
// AtStart or AtEnd. It may be called at any time, also while Poll runs.
// Adding a partition that was already added does nothing but log a
// warning, and Add after Close does nothing. Add panics on any other
// negative offset.
func (f *Fetcher) Add(topic string, partition int32, offset int64) {
	if offset < AtStart {
		panic(fmt.Sprintf("kraw: Add %s/%d at invalid offset %d", topic, partition, offset))
	}
	k := topicPartition{topic, partition}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	if _, ok := f.parts[k]; ok {
		f.log.Warn("kraw: partition added twice, keeping the first", "topic", topic, "partition", partition, "offset", offset)
		return
	}
	f.parts[k] = &fetchPart{
		topicPartition: k,
		offset:         offset,
		leader:         -1,
		epoch:          -1,
		maxBytes:       f.o.MaxPartitionBytes,
	}
	signalWake(f.manageWake)
}

// Poll blocks until at least one partition has a result (batches to
// deliver, or batches to skip that move its Next) and returns every
// result ready, at most one per partition. It returns ctx's error when ctx
// ends first, and ErrClosed once the fetcher is closed. The partitions
// returned are fetched again from their Next once Poll returns.
func (f *Fetcher) Poll(ctx context.Context) ([]PartitionFetch, error) {
	for {
		f.mu.Lock()
		if f.closed {
			f.mu.Unlock()
			return nil, ErrClosed
		}
		if len(f.results) > 0 {
			out := f.results
			f.results = nil
			for i := range out {
				if p := f.parts[topicPartition{out[i].Topic, out[i].Partition}]; p != nil {
					p.busy = false
					f.wakeLoopLocked(p.leader)
				}
			}
			f.mu.Unlock()
			return out, nil
		}
		f.mu.Unlock()
		select {
		case <-f.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-f.ctx.Done():
			return nil, ErrClosed
		}
	}
}

// Close stops the fetcher and returns once every goroutine it started has
// ended. It may be called more than once. Results not yet polled are
// dropped.
func (f *Fetcher) Close() {
	f.closeOnce.Do(func() {
		f.mu.Lock()
		f.closed = true
		f.mu.Unlock()
		f.cancel()
		f.wg.Wait()
	})
}

// signalWake does a non-blocking send on a wake channel of capacity 1.
func signalWake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// wakeLoopLocked wakes the fetch loop of broker id, starting it if none
// runs. It is called from Add, Poll and the fetcher's goroutines, so while
// Close waits the WaitGroup counter is above zero whenever it starts one.
func (f *Fetcher) wakeLoopLocked(id int32) {
	if id < 0 || f.closed {
		return
	}
	if wake, ok := f.loops[id]; ok {
		signalWake(wake)
		return
	}
	wake := make(chan struct{}, 1)
	f.loops[id] = wake
	f.wg.Go(func() { f.fetchLoop(id, wake) })
}

func retryBackoff(failures int) time.Duration {
	if failures <= 1 {
		return minRetryBackoff
	}
	if failures > 6 {
		return maxRetryBackoff
	}
	return min(minRetryBackoff<<(failures-1), maxRetryBackoff)
}

// failLocked schedules a retry of p after a backoff and logs why, at warn
// level the first time and every 20th, at debug level otherwise.
func (f *Fetcher) failLocked(p *fetchPart, what string, err error) {
	p.failures++
	p.retryAt = time.Now().Add(retryBackoff(p.failures))
	level := slog.LevelDebug
	if p.failures == 1 || p.failures%20 == 0 {
		level = slog.LevelWarn
	}
	f.log.Log(context.Background(), level, "kraw: "+what+" failed, retrying", "topic", p.topic, "partition", p.partition,
		"offset", p.offset, "failures", p.failures, "err", err)
}

////////////////////////////////////////////
// metadata and offsets: the manage loop //
////////////////////////////////////////////

// manage looks up leaders and offsets for partitions that need them.
func (f *Fetcher) manage() {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for f.ctx.Err() == nil {
		topics, offsets, wait := f.dueWork(time.Now())
		if len(topics) > 0 {
			f.refreshLeaders(topics)
		}
		if len(offsets) > 0 {
			f.resolveOffsets(offsets)
		}
		if len(topics)+len(offsets) > 0 {
			continue
		}
		t.Reset(wait)
		select {
		case <-f.ctx.Done():
		case <-f.manageWake:
		case <-t.C:
		}
	}
}

// dueWork returns the topics that have a partition needing a leader and
// the partitions needing an offset, among those whose retry time has come,
// and how long until the next retry time otherwise.
func (f *Fetcher) dueWork(now time.Time) (topics []string, offsets []topicPartition, wait time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	wait = time.Hour
	for k, p := range f.parts {
		if p.busy || (p.leader >= 0 && p.offset >= 0) {
			continue
		}
		if d := p.retryAt.Sub(now); d > 0 {
			wait = min(wait, d)
			continue
		}
		if p.leader < 0 && !slices.Contains(topics, k.topic) {
			topics = append(topics, k.topic)
		}
		if p.offset < 0 {
			offsets = append(offsets, k)
		}
	}
	return topics, offsets, wait
}

// refreshLeaders fetches metadata for topics and records the leader of
// each of their partitions that has none.
func (f *Fetcher) refreshLeaders(topics []string) {
	req := kmsg.NewPtrMetadataRequest()
	for _, t := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(t)
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(f.ctx, f.cl)
	if f.ctx.Err() != nil {
		return
	}
	type leader struct {
		id, epoch int32
		topicID   [16]byte
		err       error
	}
	leaders := make(map[topicPartition]leader)
	topicErrs := make(map[string]error)
	if err == nil {
		for _, rt := range resp.Topics {
			if rt.Topic == nil {
				continue
			}
			if err := kerr.ErrorForCode(rt.ErrorCode); err != nil {
				topicErrs[*rt.Topic] = err
				continue
			}
			for _, rp := range rt.Partitions {
				l := leader{id: rp.Leader, epoch: rp.LeaderEpoch, topicID: rt.TopicID, err: kerr.ErrorForCode(rp.ErrorCode)}
				if l.id >= 0 {
					l.err = nil // e.g. REPLICA_NOT_AVAILABLE: the leader is still good
				} else if l.err == nil {
					l.err = kerr.LeaderNotAvailable
				}
				leaders[topicPartition{*rt.Topic, rp.Partition}] = l
			}
		}
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	for k, p := range f.parts {
		if p.leader >= 0 || !slices.Contains(topics, k.topic) {
			continue
		}
		l, ok := leaders[k]
		switch {
		case err != nil:
			f.failLocked(p, "metadata request", err)
		case topicErrs[k.topic] != nil:
			f.failLocked(p, "metadata of topic", topicErrs[k.topic])
		case !ok:
			f.failLocked(p, "metadata of partition", kerr.UnknownTopicOrPartition)
		case l.err != nil:
			f.failLocked(p, "leader lookup", l.err)
		default:
			p.leader, p.epoch, p.topicID = l.id, l.epoch, l.topicID
			if p.offset >= 0 {
				f.wakeLoopLocked(p.leader)
			}
		}
	}
}

// resolveOffsets looks up the offsets of partitions added or reset at
// AtStart or AtEnd, read_committed (AtEnd is the last stable offset).
func (f *Fetcher) resolveOffsets(keys []topicPartition) {
	f.mu.Lock()
	req := kmsg.NewPtrListOffsetsRequest()
	req.IsolationLevel = 1
	var asked []topicPartition
	for _, k := range keys {
		p := f.parts[k]
		if p == nil || p.offset >= 0 {
			continue
		}
		i := slices.IndexFunc(req.Topics, func(t kmsg.ListOffsetsRequestTopic) bool { return t.Topic == k.topic })
		if i < 0 {
			rt := kmsg.NewListOffsetsRequestTopic()
			rt.Topic = k.topic
			req.Topics = append(req.Topics, rt)
			i = len(req.Topics) - 1
		}
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition = k.partition
		rp.Timestamp = p.offset // -2 earliest, -1 latest: AtStart and AtEnd
		req.Topics[i].Partitions = append(req.Topics[i].Partitions, rp)
		asked = append(asked, k)
	}
	f.mu.Unlock()
	if len(asked) == 0 {
		return
	}

	resp, err := req.RequestWith(f.ctx, f.cl)
	if f.ctx.Err() != nil {
		return
	}
	type result struct {
		offset int64
		err    error
	}
	got := make(map[topicPartition]result)
	if err == nil {
		for _, rt := range resp.Topics {
			for _, rp := range rt.Partitions {
				got[topicPartition{rt.Topic, rp.Partition}] = result{rp.Offset, kerr.ErrorForCode(rp.ErrorCode)}
			}
		}
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	for _, k := range asked {
		p := f.parts[k]
		if p == nil || p.offset >= 0 {
			continue
		}
		r, ok := got[k]
		switch {
		case err != nil:
			f.failLocked(p, "offset lookup", err)
		case !ok:
			f.failLocked(p, "offset lookup", kerr.UnknownTopicOrPartition)
		case r.err != nil:
			f.failLocked(p, "offset lookup", r.err)
		case r.offset < 0:
			f.failLocked(p, "offset lookup", fmt.Errorf("broker returned offset %d", r.offset))
		default:
			f.log.Info("kraw: partition starts", "topic", k.topic, "partition", k.partition,
				"at", offsetName(p.offset), "offset", r.offset)
			p.offset = r.offset
			f.wakeLoopLocked(p.leader)
		}
	}
}

func offsetName(o int64) string {
	switch o {
	case AtStart:
		return "start"
	case AtEnd:
		return "end"
	}
	return fmt.Sprint(o)
}

/////////////////////////////
// fetching: a broker loop //
/////////////////////////////

// inflight is a partition in a fetch request, with what was asked.
type inflight struct {
	p        *fetchPart
	topicID  [16]byte
	offset   int64
	maxBytes int32
}

// fetchLoop fetches the partitions led by broker id, one request at a
// time, until none is left or the fetcher closes.
func (f *Fetcher) fetchLoop(id int32, wake chan struct{}) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		f.mu.Lock()
		var (
			req   *kmsg.FetchRequest
			in    []inflight
			wait  time.Duration
			owned bool
		)
		if !f.closed {
			req, in, wait, owned = f.buildFetchLocked(id, time.Now())
		}
		if !owned {
			delete(f.loops, id)
			f.mu.Unlock()
			return
		}
		f.mu.Unlock()

		if req == nil {
			t.Reset(wait)
			select {
			case <-f.ctx.Done():
			case <-wake:
			case <-t.C:
			}
			continue
		}
		resp, err := f.cl.Broker(int(id)).Request(f.ctx, req)
		if f.ctx.Err() != nil {
			continue // closed: the next turn returns
		}
		var fresp *kmsg.FetchResponse
		if err == nil {
			fresp = resp.(*kmsg.FetchResponse)
			err = kerr.ErrorForCode(fresp.ErrorCode)
		}
		f.handleFetch(id, in, fresp, err)
	}
}

// buildFetchLocked builds a fetch of every partition led by broker id that
// is ready to fetch. With none ready, it returns a nil request and how long
// until a retry time comes. owned reports whether broker id leads any
// partition at all.
func (f *Fetcher) buildFetchLocked(id int32, now time.Time) (req *kmsg.FetchRequest, in []inflight, wait time.Duration, owned bool) {
	wait = time.Hour
	for _, p := range f.parts {
		if p.leader != id {
			continue
		}
		owned = true
		if p.busy || p.offset < 0 {
			continue
		}
		if d := p.retryAt.Sub(now); d > 0 {
			wait = min(wait, d)
			continue
		}
		p.busy = true
		in = append(in, inflight{p, p.topicID, p.offset, p.maxBytes})
	}
	if len(in) == 0 {
		return nil, nil, wait, owned
	}

	req = kmsg.NewPtrFetchRequest()
	req.MaxWaitMillis = int32(max(f.o.MaxWait/time.Millisecond, 1))
	req.MinBytes = 1
	req.MaxBytes = f.o.MaxBytes
	req.IsolationLevel = 1
	req.SessionID = 0
	req.SessionEpoch = -1 // no fetch session: a full fetch each time
	for _, x := range in {
		// Partitions go in map order, which is random: a response
		// filled up to MaxBytes favors no partition for long.
		i := slices.IndexFunc(req.Topics, func(t kmsg.FetchRequestTopic) bool { return t.Topic == x.p.topic })
		if i < 0 {
			rt := kmsg.NewFetchRequestTopic()
			rt.Topic = x.p.topic
			rt.TopicID = x.topicID // used from v13 on, when ClientOpts was not applied
			req.Topics = append(req.Topics, rt)
			i = len(req.Topics) - 1
		}
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition = x.p.partition
		rp.CurrentLeaderEpoch = x.p.epoch
		rp.FetchOffset = x.offset
		rp.PartitionMaxBytes = x.maxBytes
		req.Topics[i].Partitions = append(req.Topics[i].Partitions, rp)
		req.MaxBytes = max(req.MaxBytes, x.maxBytes)
	}
	return req, in, wait, owned
}

// handleFetch applies a fetch response (or the error that replaced it) to
// the partitions that were in the request.
func (f *Fetcher) handleFetch(id int32, in []inflight, resp *kmsg.FetchResponse, err error) {
	rps := make(map[respPart]*kmsg.FetchResponseTopicPartition)
	if err == nil {
		for i := range resp.Topics {
			rt := &resp.Topics[i]
			for j := range rt.Partitions {
				rp := &rt.Partitions[j]
				rps[respPartOf(rt.Topic, rt.TopicID, rp.Partition)] = rp
			}
		}
	}

	// Parse outside the lock, with what inflight copied: the partitions'
	// other fields are guarded by mu.
	type outcome struct {
		rp     *kmsg.FetchResponseTopicPartition
		parsed parsedPartition
	}
	outs := make([]outcome, len(in))
	for i, x := range in {
		rp := rps[respPart{topic: x.p.topic, partition: x.p.partition}]
		if rp == nil {
			rp = rps[respPart{id: x.topicID, partition: x.p.partition}]
		}
		outs[i].rp = rp
		if rp != nil && rp.ErrorCode == 0 {
			outs[i].parsed = parsePartition(x.offset, rp.RecordBatches, rp.LastStableOffset, rp.AbortedTransactions)
		}
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		// The broker may be gone: look the leaders up again.
		for _, x := range in {
			x.p.busy = false
			x.p.leader = -1
			f.failLocked(x.p, fmt.Sprintf("fetch from broker %d", id), err)
		}
		signalWake(f.manageWake)
		return
	}
	var delivered bool
	for i, x := range in {
		p, rp, parsed := x.p, outs[i].rp, &outs[i].parsed
		p.busy = false
		if rp == nil {
			f.failLocked(p, fmt.Sprintf("fetch from broker %d", id), errors.New("partition missing from the response"))
			continue
		}
		if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
			f.partitionErrorLocked(p, id, rp, err)
			continue
		}
		if len(parsed.batches) > 0 {
			f.results = append(f.results, PartitionFetch{
				Topic:         p.topic,
				Partition:     p.partition,
				From:          x.offset,
				Next:          parsed.next,
				HighWatermark: rp.HighWatermark,
				LastStable:    rp.LastStableOffset,
				LogStart:      rp.LogStartOffset,
				Batches:       parsed.batches,
			})
			p.busy = true // until Poll returns the result
			p.offset = parsed.next
			p.failures = 0
			p.maxBytes = f.o.MaxPartitionBytes
			delivered = true
			if parsed.err != nil {
				f.log.Warn("kraw: fetched batch is invalid, the fetch stops before it", "topic", p.topic,
					"partition", p.partition, "offset", parsed.next, "err", parsed.err)
			}
			continue
		}
		switch {
		case parsed.err != nil:
			f.failLocked(p, "fetch", parsed.err)
		case parsed.stuck && p.maxBytes < maxGrownBytes:
			// No complete batch came back (a broker without KIP-74, or
			// only batches below the offset): ask for more, as consumers do.
			p.maxBytes = int32(min(2*int64(p.maxBytes), maxGrownBytes))
			f.log.Debug("kraw: no complete batch fetched, raising the partition's byte limit", "topic", p.topic,
				"partition", p.partition, "offset", p.offset, "max_bytes", p.maxBytes)
		case parsed.stuck:
			f.failLocked(p, "fetch", fmt.Errorf("no complete batch in %d bytes", len(rp.RecordBatches)))
		default: // nothing new yet
			p.failures = 0
			p.maxBytes = f.o.MaxPartitionBytes
		}
	}
	if delivered {
		signalWake(f.ready)
	}
}

// partitionErrorLocked handles a partition's error code in a fetch
// response.
func (f *Fetcher) partitionErrorLocked(p *fetchPart, id int32, rp *kmsg.FetchResponseTopicPartition, err error) {
	switch err {
	case kerr.OffsetOutOfRange:
		to := AtStart
		if f.o.ResetToEnd {
			to = AtEnd
		}
		f.log.Warn("kraw: fetch offset out of range, restarting the partition", "topic", p.topic,
			"partition", p.partition, "offset", p.offset, "log_start", rp.LogStartOffset,
			"high_watermark", rp.HighWatermark, "restart_at", offsetName(to))
		p.offset = to
		// A partition that keeps landing out of range (retention
		// racing the lookup) backs off from its second reset on.
		p.failures++
		p.retryAt = time.Now()
		if p.failures > 1 {
			p.retryAt = p.retryAt.Add(retryBackoff(p.failures - 1))
		}
		signalWake(f.manageWake)
	case kerr.NotLeaderForPartition, kerr.UnknownTopicOrPartition, kerr.LeaderNotAvailable,
		kerr.FencedLeaderEpoch, kerr.UnknownLeaderEpoch, kerr.UnknownTopicID, kerr.InconsistentTopicID,
		kerr.KafkaStorageError, kerr.ReplicaNotAvailable:
		p.leader = -1
		f.failLocked(p, fmt.Sprintf("fetch from broker %d", id), err)
		signalWake(f.manageWake)
	default:
		f.failLocked(p, fmt.Sprintf("fetch from broker %d", id), err)
	}
}

/////////////////////////////////
// parsing a fetched partition //
/////////////////////////////////

// parsedPartition is the result of parsePartition.
type parsedPartition struct {
	batches []Batch
	// next is the offset after the last batch returned, or the fetch
	// offset if none was.
	next int64
	// stuck reports bytes that held no batch to return, with no error:
	// a partial first batch, or only batches below the fetch offset.
	stuck bool
	// err is why parsing stopped early: batches holds the valid batches
	// before the problem.
	err error
}

// parsePartition splits the record bytes of a fetched partition into
// batches: complete batches only, below lso (when lso >= 0), dropping those
// that end before from, checking v2 CRCs, and marking as Skip control
// batches, batches with no records, and data batches of the aborted
// transactions listed.
//
// Aborted transactions follow the consumer's algorithm (Kafka's
// CompletedFetch, kgo's aborter): the list is sorted by first offset;
// before each batch with a producer ID, every aborted transaction that
// starts at or before the batch's last offset joins the active set of its
// producer; a transactional data batch of a producer in the active set is
// aborted; that producer's abort marker (a control batch) leaves the set.
func parsePartition(from int64, records []byte, lso int64, abortedTxns []kmsg.FetchResponseTopicPartitionAbortedTransaction) parsedPartition {
	aborted := slices.Clone(abortedTxns)
	slices.SortStableFunc(aborted, func(a, b kmsg.FetchResponseTopicPartitionAbortedTransaction) int {
		switch {
		case a.FirstOffset < b.FirstOffset:
			return -1
		case a.FirstOffset > b.FirstOffset:
			return 1
		}
		return 0
	})
	var active map[int64]struct{}

	out := parsedPartition{next: from}
	errStop := errors.New("stop")
	_, err := Split(records, func(h Header, b []byte) error {
		if lso >= 0 && h.BaseOffset >= lso {
			return errStop // the broker does this already
		}
		var skip bool
		switch h.Magic {
		case 0, 1:
		case 2:
			if err := CheckCRC(b); err != nil {
				return err
			}
			if h.ProducerID >= 0 {
				last := h.NextOffset() - 1
				for len(aborted) > 0 && aborted[0].FirstOffset <= last {
					if active == nil {
						active = make(map[int64]struct{})
					}
					active[aborted[0].ProducerID] = struct{}{}
					aborted = aborted[1:]
				}
				if h.Control() {
					typ, err := controlType(b)
					if err != nil {
						return err
					}
					if typ == controlAbort {
						delete(active, h.ProducerID)
					}
				} else if _, ok := active[h.ProducerID]; ok && h.Transactional() {
					skip = true
				}
			}
			skip = skip || h.Control() || h.Records == 0
		default:
			return fmt.Errorf("kraw: record batch at offset %d has unknown magic %d", h.BaseOffset, h.Magic)
		}
		if h.NextOffset() <= out.next {
			return nil // ends before the fetch offset (or goes backwards)
		}
		batchFrom := out.next
		if h.Magic == 2 {
			batchFrom = max(batchFrom, h.BaseOffset)
		}
		out.batches = append(out.batches, Batch{Header: h, Bytes: b, Skip: skip, From: batchFrom})
		out.next = h.NextOffset()
		return nil
	})
	switch {
	case errors.Is(err, errStop):
	case err != nil:
		out.err = err
	case len(out.batches) == 0 && len(records) > 0:
		out.stuck = true
	}
	return out
}

// Control record types: the type field of a control record's key.
const (
	controlAbort  = 0
	controlCommit = 1
)

// controlType returns the type of the first record of a control batch:
// controlAbort or controlCommit for transaction markers. Control batches
// are never compressed.
func controlType(batch []byte) (int16, error) {
	bad := func(why string) (int16, error) {
		return -1, fmt.Errorf("kraw: control batch at offset %d: %s", int64(binary.BigEndian.Uint64(batch)), why)
	}
	if len(batch) < HeaderSize {
		return -1, ErrTruncated
	}
	if batch[offAttributes+1]&AttrCompressionMask != 0 {
		return bad("compressed")
	}
	b := batch[HeaderSize:]
	length, n := binary.Varint(b)
	if n <= 0 || length < 0 || length > int64(len(b)-n) {
		return bad("bad record length")
	}
	b = b[n : n+int(length)]
	if len(b) < 1 {
		return bad("empty record")
	}
	b = b[1:] // attributes
	for range 2 {
		// timestamp delta, offset delta
		_, n := binary.Varint(b)
		if n <= 0 {
			return bad("bad record header")
		}
		b = b[n:]
	}
	keyLen, n := binary.Varint(b)
	if n <= 0 || keyLen < 4 || keyLen > int64(len(b)-n) {
		return bad("bad control key")
	}
	key := b[n:]
	return int16(binary.BigEndian.Uint16(key[2:])), nil
}

// respPart names a partition of a response: by topic name, or by topic ID
// when the name is empty (versions that carry IDs).
type respPart struct {
	topic     string
	id        [16]byte
	partition int32
}

func respPartOf(topic string, id [16]byte, partition int32) respPart {
	if topic != "" {
		return respPart{topic: topic, partition: partition}
	}
	return respPart{id: id, partition: partition}
}
