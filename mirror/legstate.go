package mirror

import (
	"fmt"
	"hash/fnv"
	"slices"
	"sync"
	"time"

	"github.com/meridian-gw/meridian/internal/kraw"
	"github.com/meridian-gw/meridian/mirror/progress"
	"github.com/meridian-gw/meridian/transport"
)

// legState is the receiving end's state of one leg and of its shards: which
// session owns the leg and which wait as candidates, the generation and
// whether a Resume is due, the destination topics prepared, and per shard
// its queue, whether it is open (ready), inside a transaction (busy) and
// since when its queue's head waits for its topic (held). See "Receiver
// states" in doc.go for the transitions.
//
// Its methods are the only code that reads or changes these fields. mu
// guards all of them; methods whose names end in Locked expect the caller
// to hold it, every other method takes it. Lock order: legState.mu, then
// legStats.mu (opened restores the stats under mu).
type legState struct {
	leg       string
	topicWait time.Duration
	notify    chan struct{} // cap 1: wakes the leg's coordinator

	mu         sync.Mutex
	gen        uint64 // the latest generation handed out (owner's or a sharer's)
	ownerGen   uint64 // the generation of the owner's batches
	owner      *inSession
	others     []*inSession // older sessions that also carry the leg, oldest first
	needResume bool
	topics     map[string]*destTopic        // by source topic; set by Topic frames
	announced  map[string]map[string]string // source topic → configs last applied
	shards     []*shard
	writing    int                 // shards inside a transaction
	omap       *progress.OffsetMap // nil until the shards are open (and only when the leg syncs groups)
	fence      *progress.Fence     // set while the leg is fenced
	// quarantined are the source partitions the destination refuses
	// (quarantine.go).
	quarantined map[tp]*quarantine
	// Shared legs (share.go): the sessions that share the leg, each
	// partition's claimer, the latest group generation accepted per
	// partition, the sharers' attach counter and how many of them await a
	// Resume.
	sharers       map[*inSession]*sharer
	claims        map[tp]claimant
	claimGen      map[tp]int32
	shareSeq      int
	sharerResumes int
}

// shard is one transactional producer of a leg and its queue. Its fields
// other than idx, sink and notify belong to the leg's legState.
type shard struct {
	idx    int
	sink   *sink         // used by one goroutine at a time: the shard loop while busy, else the coordinator
	notify chan struct{} // cap 1: queue changed

	queue []queued  // batches accepted, in order
	ready bool      // open, committed state loaded
	busy  bool      // inside a transaction (its sink is in use)
	held  time.Time // since when the queue's head waits for its topic
}

type queued struct {
	b    *transport.Batch
	sess *inSession
	cost int64 // charged to sess.win; released when the batch is acked or dropped
}

func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// setShards installs the leg's shards once, before any session attaches.
func (s *legState) setShards(shards []*shard) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shards = shards
}

func (s *legState) shardOfLocked(topic string, partition int32) *shard {
	h := fnv.New32a()
	h.Write([]byte(topic))
	return s.shards[(h.Sum32()+uint32(partition)*2654435761)%uint32(len(s.shards))]
}

// resetLocked starts a new generation for every session of the leg:
// queued batches are dropped and the coordinator sends a Resume once no
// shard is inside a transaction.
func (s *legState) resetLocked() {
	s.dropQueuesLocked()
	s.resetOwnerLocked()
	for _, sh := range s.sharers {
		s.resetSharerLocked(sh)
	}
}

func (s *legState) dropQueuesLocked() {
	for _, sh := range s.shards {
		for _, q := range sh.queue {
			q.sess.win.release(q.cost)
		}
		sh.queue, sh.held = nil, time.Time{}
	}
}

// attach makes sess the leg's owner. The previous owner, if still open,
// stays a candidate: a sender racing redials over a dead path may open two
// sessions and close the later one, and the leg then falls back to the
// earlier. With ifFree (a tentative session) sess becomes the owner only if
// the leg has none, else a candidate that the leg falls back to when its
// owner ends.
func (s *legState) attach(sess *inSession, ifFree bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.owner != nil {
		if ifFree {
			s.others = append(s.others, sess)
			return
		}
		s.others = append(s.others, s.owner)
	}
	s.owner = sess
	s.resetOwnerLocked()
}

// idle reports whether no session carries the leg (owner or candidate).
func (s *legState) idle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.owner == nil && len(s.others) == 0 && len(s.sharers) == 0
}

// detach forgets sess; if it owned the leg, the latest candidate takes over
// and resumes from what is committed.
func (s *legState) detach(sess *inSession) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sh := s.sharers[sess]; sh != nil {
		s.unshareLocked(sh)
		return
	}
	s.others = slices.DeleteFunc(s.others, func(o *inSession) bool { return o == sess })
	if s.owner != sess {
		return
	}
	s.dropQueuedLocked(sess)
	s.owner = nil
	if n := len(s.others); n > 0 {
		s.owner, s.others = s.others[n-1], s.others[:n-1]
		s.resetOwnerLocked()
	}
}

// enqueue queues b from sess, charged cost in sess's window, on its shard
// and returns the shard, or nil if b is stale: not from the owner, of an
// older generation, or sent before the Resume that is due.
func (s *legState) enqueue(b *transport.Batch, sess *inSession, cost int64) *shard {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.acceptsLocked(b, sess) {
		return nil
	}
	sh := s.shardOfLocked(b.Topic, b.Partition)
	sh.queue = append(sh.queue, queued{b, sess, cost})
	return sh
}

// ownerAndFence returns the leg's owner (nil: none) and fence (nil: none).
func (s *legState) ownerAndFence() (*inSession, *progress.Fence) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.owner, s.fence
}

// offsetMap is the leg's in-memory offset map, or nil.
func (s *legState) offsetMap() *progress.OffsetMap {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.omap
}

// toOpen returns the shards that are neither open nor in use, once no
// shard of the leg is inside a transaction. The progress that openShards
// then loads is read up to the progress topic's last stable offset, which
// an open transaction holds back: loaded while another shard's transaction
// was open, it could miss what the reopened shard had committed after that
// transaction began, and the leg would resume from older positions and
// write those records again. Resume waits for the same moment anyway
// (resumeDue).
func (s *legState) toOpen() []*shard {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.writing > 0 {
		return nil // finish wakes the coordinator when the last one ends
	}
	var todo []*shard
	for _, sh := range s.shards {
		if !sh.ready && !sh.busy { // a busy shard's sink is in use: later
			todo = append(todo, sh)
		}
	}
	return todo
}

// fenced records the leg's fence and closes every shard: each reopens and
// reloads once the fence is lifted, so none keeps a fenced producer or
// positions from before. A busy shard closes its sink when its
// transaction ends (finish).
func (s *legState) fenced(f *progress.Fence) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fence = f
	for _, sh := range s.shards {
		sh.ready = false
		if !sh.busy {
			sh.sink.close()
		}
	}
}

// destTopics returns the destination topics the leg's Topic frames named.
func (s *legState) destTopics() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.topics))
	for _, dt := range s.topics {
		out = append(out, dt.name)
	}
	return out
}

// opened marks the shards of todo, now open, ready with the committed
// progress and segments of st; omap, if not nil, becomes the leg's offset
// map. restore is called under mu with each shard's committed progress.
func (s *legState) opened(todo []*shard, st *progress.State, omap *progress.OffsetMap, restore func(map[tp]*progress.Record)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fence = nil
	if omap != nil {
		s.omap = omap
	}
	for _, sh := range todo {
		sh.sink.committed = map[tp]*progress.Record{}
		sh.sink.segs = map[tp][]progress.SegRef{}
	}
	for k, p := range st.Progress(s.leg) {
		if sh := s.shardOfLocked(k.Topic, k.Partition); !sh.ready {
			sh.sink.committed[k] = p
		}
	}
	for k, refs := range st.Segments(s.leg) {
		if sh := s.shardOfLocked(k.Topic, k.Partition); !sh.ready {
			sh.sink.segs[k] = refs
		}
	}
	for _, sh := range todo {
		sh.ready = true
		restore(sh.sink.committed)
	}
}

// resumeDue returns the Resumes to send, each with the session to send
// it to, when some are due and can go: to the owner, and to each sharer
// that awaits one (share.go), once every shard is open and none is inside
// a transaction. The shards may then take work again.
func (s *legState) resumeDue() []dueResume {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.resumePendingLocked() || s.writing > 0 {
		return nil
	}
	for _, sh := range s.shards {
		if !sh.ready {
			return nil
		}
	}
	var positions []transport.Position
	for _, sh := range s.shards {
		for k, p := range sh.sink.committed {
			positions = append(positions, transport.Position{Topic: k.Topic, Partition: k.Partition, NextOffset: p.Next})
		}
	}
	var out []dueResume
	if s.needResume && s.owner != nil {
		s.needResume = false
		out = append(out, dueResume{rs: &transport.Resume{Leg: s.leg, Gen: s.ownerGen, Positions: positions}, sess: s.owner})
	}
	out = append(out, s.sharerResumesLocked(positions)...)
	for _, sh := range s.shards {
		wake(sh.notify) // they may now take work
	}
	return out
}

// take starts a transaction on sh: it removes from sh's queue the batches
// the transaction carries (in order, up to maxTxnBytes and
// maxTxnKafkaBatches, stopping at a batch whose topic is not prepared yet)
// and returns them with the prepared topics; batches of quarantined
// partitions it removes too, and returns in dropped, to be acknowledged
// unwritten. It returns nothing to take when sh may not take work now;
// then held, if not nil, is why the leg just gave up waiting for a topic
// and starts a new generation.
func (s *legState) take(sh *shard) (take, dropped []queued, topics map[string]*destTopic, held error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.resumePendingLocked() || !sh.ready || len(sh.queue) == 0 {
		return nil, nil, nil, nil
	}
	var size, kafka int
	for len(sh.queue) > 0 && size < maxTxnBytes && kafka < maxTxnKafkaBatches {
		q := sh.queue[0]
		if s.quarantinedLocked(tp{Topic: q.b.Topic, Partition: q.b.Partition}) {
			sh.queue = sh.queue[1:]
			dropped = append(dropped, q)
			continue
		}
		if !s.preparedLocked(q.b) {
			break // its topic's announcement is still in hand
		}
		sh.queue = sh.queue[1:]
		take = append(take, q)
		size += q.b.RawSize()
		if q.b.Kafka != nil {
			kafka += kraw.Count(q.b.Kafka)
		}
	}
	if len(take) == 0 {
		if len(sh.queue) == 0 {
			return nil, dropped, nil, nil
		}
		return nil, dropped, nil, s.holdLocked(sh)
	}
	sh.held = time.Time{}
	topics = make(map[string]*destTopic, len(s.topics))
	for k, v := range s.topics {
		topics[k] = v
	}
	s.writing++
	sh.busy = true
	return take, dropped, topics, nil
}

// finish ends the transaction take started on sh. A failed one closes the
// shard (it reopens and reloads what is really committed) and starts a new
// generation; a shard closed by a fence meanwhile closes its sink now.
func (s *legState) finish(sh *shard, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writing--
	sh.busy = false
	switch {
	case err != nil:
		sh.ready = false
		sh.sink.close()
		s.resetLocked()
	case !sh.ready:
		sh.sink.close()
		wake(s.notify)
	case s.writing == 0 && (s.needResume || s.sharerResumes > 0):
		// A Resume, or a failed shard's reopening (toOpen), waited for
		// the last transaction.
		wake(s.notify)
	}
}

// refused ends the transaction take started on sh without writing it (its
// batches do not continue the committed progress) and starts a new
// generation; the shard stays open.
func (s *legState) refused(sh *shard) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writing--
	sh.busy = false
	if !sh.ready {
		sh.sink.close()
	}
	s.resetLocked()
}

// preparedLocked reports whether b's destination topic and partition are
// prepared. A sender consumes a topic it has progress for while announcing
// it, so its batches may overtake the announcement.
func (s *legState) preparedLocked(b *transport.Batch) bool {
	dt := s.topics[b.Topic]
	return dt != nil && b.Partition < dt.partitions
}

// holdLocked keeps the head of sh's queue waiting for its topic to be
// prepared and returns nil while it may wait. After topicWait it gives up,
// returns why, and the leg resumes from what is committed, as after a
// failed transaction.
func (s *legState) holdLocked(sh *shard) error {
	now := time.Now()
	if sh.held.IsZero() {
		sh.held = now
		time.AfterFunc(s.topicWait, func() { wake(sh.notify) })
		return nil
	}
	if now.Sub(sh.held) < s.topicWait {
		return nil
	}
	sh.held = time.Time{}
	b := sh.queue[0].b
	err := fmt.Errorf("topic %q partition %d was not announced within %s", b.Topic, b.Partition, s.topicWait)
	s.resetLocked()
	return err
}

// announcedConfigs are the configs last applied for a source topic.
func (s *legState) announcedConfigs(topic string) map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.announced[topic]
}

// prepared records a prepared destination topic and wakes the shards whose
// batches overtook its announcement.
func (s *legState) prepared(topic string, dt *destTopic, configs map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.topics == nil {
		s.topics = map[string]*destTopic{}
		s.announced = map[string]map[string]string{}
	}
	s.topics[topic] = dt
	s.announced[topic] = configs
	for _, sh := range s.shards {
		if len(sh.queue) > 0 {
			wake(sh.notify)
		}
	}
}
