package mirror

import (
	"cmp"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/meridian-gw/meridian/mirror/progress"
	"github.com/meridian-gw/meridian/transport"
)

// Shared legs, the receiving end (protocol version 5). When several
// gateways of the source region send a leg (routing.Leg.Shared), each
// joins the leg's consumer group on the source cluster and sends only the
// partitions the group assigns it: Kafka coordinates them, there is no
// election of our own. Each session names the partitions it sends in Claim
// frames, stamped with the group generation they were assigned in, and
// the receiver accepts a partition's batches from its claimer only.
//
// The rules, applied under legState.mu:
//
//   - A claim of partition k in generation G is refused when a claim of k
//     in a later generation has been accepted (since the gateway started):
//     a gateway paused past its group session (SIGSTOP) that wakes up and
//     sends what it still believes it owns is a zombie, and nothing of it
//     is written.
//   - A claim in the generation of the current claimer's claim goes to
//     the newer session, unless it came as 0-RTT data (tentative, which an
//     attacker can replay): the same gateway redialling re-claims in the
//     same generation, and a replay never displaces a live session.
//   - Every claim, and every change of a partition's claimer, starts a new
//     generation of batches for the sessions concerned: their queued
//     batches are dropped and each gets a Resume with the committed
//     positions once no shard is inside a transaction, so a partition
//     moves between senders at a committed position and exactly once
//     holds across the move.
//   - A session that ends releases its claims; a session still wanting a
//     partition (it claimed it too, waiting behind the claimer) takes it.
//
// Batches of a session in owner mode (a sender that does not share the
// leg, such as one of an older version) are accepted only for partitions
// no sharer claims.

// sharer is a session that shares a leg (its Hello listed the leg in
// Shared).
type sharer struct {
	sess       *inSession
	seq        int    // attach order: the newest wins a tie
	gen        uint64 // the generation of its batches (its last Resume's)
	needResume bool
	claimed    bool // it has sent a Claim: only then does it get Resumes
	group      int32
	member     string
	want       map[tp]bool // what its last Claim named, accepted or not
}

// claimant is a partition's claimer and the generation of its claim.
type claimant struct {
	sh    *sharer
	group int32
}

// share adds sess as a sharer of the leg. It gets a Resume only in
// answer to its first Claim.
func (s *legState) share(sess *inSession) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sharers == nil {
		s.sharers = map[*inSession]*sharer{}
		s.claims = map[tp]claimant{}
		s.claimGen = map[tp]int32{}
	}
	s.shareSeq++
	s.sharers[sess] = &sharer{sess: sess, seq: s.shareSeq}
	wake(s.notify) // the coordinator reopens shards only for a leg with a session
}

// claimResult is what a Claim changed, for the log.
type claimResult struct {
	took, released, refused []tp
}

// claim applies c from sess (see the rules above); tentative says the
// session's handshake is not confirmed yet. It returns what changed, or
// ok false when sess does not share the leg.
func (s *legState) claim(sess *inSession, c *transport.Claim, tentative bool) (res claimResult, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sh := s.sharers[sess]
	if sh == nil {
		return res, false
	}
	want := map[tp]bool{}
	for _, t := range c.Topics {
		for _, p := range t.Partitions {
			want[tp{Topic: t.Topic, Partition: p}] = true
		}
	}
	sh.group, sh.member, sh.want, sh.claimed = c.Generation, c.Member, want, true
	// Release what it no longer names.
	for k, cl := range s.claims {
		if cl.sh == sh && !want[k] {
			delete(s.claims, k)
			res.released = append(res.released, k)
		}
	}
	for k := range want {
		if g, seen := s.claimGen[k]; seen && c.Generation < g {
			res.refused = append(res.refused, k)
			continue
		}
		cur, held := s.claims[k]
		switch {
		case held && cur.sh == sh:
		case held && (c.Generation < cur.group || c.Generation == cur.group && (tentative || cur.sh.seq > sh.seq)):
			continue // waits behind the claimer
		default:
			if held {
				s.resetSharerLocked(cur.sh)
			}
			s.claims[k] = claimant{sh: sh, group: c.Generation}
			s.claimGen[k] = c.Generation
			res.took = append(res.took, k)
		}
	}
	if len(res.took) > 0 && s.owner != nil {
		// An owner-mode session may have queued batches of what was taken.
		s.resetOwnerLocked()
	}
	s.resetSharerLocked(sh)
	return res, true
}

// unshareLocked forgets sharer sh (its session ended): its claims go to
// the newest sharer still wanting each partition in the latest
// generation, which starts a new generation.
func (s *legState) unshareLocked(sh *sharer) {
	delete(s.sharers, sh.sess)
	s.dropQueuedLocked(sh.sess)
	if sh.needResume {
		sh.needResume = false
		s.sharerResumes--
	}
	for k, cl := range s.claims {
		if cl.sh != sh {
			continue
		}
		delete(s.claims, k)
		var next *sharer
		for _, o := range s.sharers {
			if !o.want[k] || o.group < s.claimGen[k] {
				continue
			}
			if next == nil || o.group > next.group || o.group == next.group && o.seq > next.seq {
				next = o
			}
		}
		if next != nil {
			s.claims[k] = claimant{sh: next, group: next.group}
			s.resetSharerLocked(next)
		}
	}
}

// resetSharerLocked starts a new generation of sh's batches: its queued
// batches are dropped and, once it has claimed, it gets a Resume.
func (s *legState) resetSharerLocked(sh *sharer) {
	s.gen++
	sh.gen = s.gen
	s.dropQueuedLocked(sh.sess)
	if sh.claimed && !sh.needResume {
		sh.needResume = true
		s.sharerResumes++
	}
	wake(s.notify)
}

// resetOwnerLocked starts a new generation for the owner-mode sessions.
func (s *legState) resetOwnerLocked() {
	s.gen++
	s.ownerGen = s.gen
	if s.owner != nil {
		s.dropQueuedLocked(s.owner)
	}
	s.needResume = true
	wake(s.notify)
}

// dropQueuedLocked drops the batches sess queued.
func (s *legState) dropQueuedLocked(sess *inSession) {
	for _, sh := range s.shards {
		kept := sh.queue[:0]
		for _, q := range sh.queue {
			if q.sess == sess {
				q.sess.win.release(q.cost)
				continue
			}
			kept = append(kept, q)
		}
		clear(sh.queue[len(kept):])
		sh.queue = kept
		if len(kept) == 0 {
			sh.held = time.Time{}
		}
	}
}

// acceptsLocked reports whether b from sess may be queued: from the
// partition's claimer in its current generation, or, from an owner-mode
// session, of a partition nobody claims.
func (s *legState) acceptsLocked(b *transport.Batch, sess *inSession) bool {
	if sh := s.sharers[sess]; sh != nil {
		cl, held := s.claims[tp{Topic: b.Topic, Partition: b.Partition}]
		return held && cl.sh == sh && b.Gen == sh.gen && !sh.needResume
	}
	if s.owner != sess || b.Gen != s.ownerGen || s.needResume {
		return false
	}
	_, claimed := s.claims[tp{Topic: b.Topic, Partition: b.Partition}]
	return !claimed
}

// resumePendingLocked reports whether a Resume is due to a session that
// can get it: the shards take no work until it has gone.
func (s *legState) resumePendingLocked() bool {
	return s.needResume && s.owner != nil || s.sharerResumes > 0
}

// sharerResumesLocked returns the Resumes due to sharers (positions all
// the leg's committed ones: a sender reads only those it claims) and
// clears them.
func (s *legState) sharerResumesLocked(positions []transport.Position) []dueResume {
	var out []dueResume
	for _, sh := range s.sharers {
		if !sh.needResume {
			continue
		}
		sh.needResume = false
		s.sharerResumes--
		out = append(out, dueResume{rs: &transport.Resume{Leg: s.leg, Gen: sh.gen, Positions: positions}, sess: sh.sess})
	}
	return out
}

// claimed logs and counts what a Claim from sess changed.
func (l *inLeg) claimed(log *slog.Logger, sess *inSession, c *transport.Claim, res claimResult) {
	m := l.e.m
	m.claims.WithLabelValues(l.leg.ID, "took").Add(float64(len(res.took)))
	m.claims.WithLabelValues(l.leg.ID, "released").Add(float64(len(res.released)))
	m.claims.WithLabelValues(l.leg.ID, "refused").Add(float64(len(res.refused)))
	n := 0
	for _, t := range c.Topics {
		n += len(t.Partitions)
	}
	log.Info("partitions claimed", "leg", l.leg.ID, "generation", c.Generation, "member", c.Member, "claimed", n,
		"took", len(res.took), "released", len(res.released), "refused", len(res.refused))
	if len(res.refused) > 0 {
		log.Warn("claim refused for partitions claimed in a later consumer group generation: the sender is a zombie (paused past its group session?), and nothing it sends of them is written",
			"leg", l.leg.ID, "generation", c.Generation, "partitions", tpNames(res.refused))
	}
}

func tpNames(ks []tp) []string {
	out := make([]string, len(ks))
	for i, k := range ks {
		out[i] = k.Topic + "/" + strconv.Itoa(int(k.Partition))
	}
	slices.Sort(out)
	return out
}

// feeders returns the sessions that feed the leg now, the owner and the
// sharers, and the leg's fence (nil: none).
func (s *legState) feeders() ([]*inSession, *progress.Fence) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*inSession
	if s.owner != nil {
		out = append(out, s.owner)
	}
	for sess := range s.sharers {
		out = append(out, sess)
	}
	return out, s.fence
}

// dueResume is a Resume and the session it goes to.
type dueResume struct {
	rs   *transport.Resume
	sess *inSession
}

// ShareStatus is one sending gateway's share of a leg, as the receiver
// sees it.
type ShareStatus struct {
	Gateway    string   `json:"gateway"`
	Member     string   `json:"member,omitempty"`
	Generation int32    `json:"generation"`
	Partitions []string `json:"partitions"` // "topic/partition", sorted
	Waiting    []string `json:"waiting,omitempty"`
}

// shareStatus lists the leg's sharers and what each holds.
func (s *legState) shareStatus() []ShareStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []ShareStatus
	for _, sh := range s.sharers {
		st := ShareStatus{Gateway: sh.sess.peer, Member: sh.member, Generation: sh.group, Partitions: []string{}}
		for k := range sh.want {
			name := k.Topic + "/" + strconv.Itoa(int(k.Partition))
			if cl, ok := s.claims[k]; ok && cl.sh == sh {
				st.Partitions = append(st.Partitions, name)
			} else {
				st.Waiting = append(st.Waiting, name)
			}
		}
		slices.Sort(st.Partitions)
		slices.Sort(st.Waiting)
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b ShareStatus) int {
		return cmp.Or(cmp.Compare(a.Gateway, b.Gateway), cmp.Compare(a.Generation, b.Generation))
	})
	return out
}
