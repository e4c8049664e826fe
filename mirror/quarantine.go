package mirror

import (
	"cmp"
	"slices"
	"strings"
	"time"
)

// Quarantine: a destination error that refuses a whole partition for good
// (the gateway may not write its topic, or the topic's name is invalid
// there) quarantines that one partition instead of failing the leg's
// transactions forever. A quarantined partition's batches are dropped (and
// acknowledged, so that they hold no credit) without being written, its
// progress stays where it was, and the rest of the leg flows. After a
// capped, jittered backoff the leg resumes its sender from the committed
// progress and writes the partition again (a probe): once that commits,
// the partition has recovered; if it is refused again, the next probe
// waits longer.

// Quarantine kinds: the reason label of meridian_quarantined_partitions.
const (
	quarantineAuthz        = "topic-authorization"
	quarantineInvalidTopic = "invalid-topic"
)

var quarantineKinds = []string{quarantineAuthz, quarantineInvalidTopic}

// Backoff between probes of a quarantined partition.
const (
	quarantineMin = time.Second
	quarantineMax = 5 * time.Minute
)

// quarantineError is a failed transaction whose cause quarantines source
// partition k.
type quarantineError struct {
	k    tp
	kind string
	err  error
}

func (e *quarantineError) Error() string { return e.err.Error() }
func (e *quarantineError) Unwrap() error { return e.err }

// quarantine is one quarantined partition; legState owns it.
type quarantine struct {
	kind, reason   string
	since, retryAt time.Time
	attempts       int // probes refused so far
	bo             *backoff
	probing        bool // the partition is being written again
}

// QuarantinedPartition is a partition of an inbound leg that the
// destination refuses, in status.
type QuarantinedPartition struct {
	Topic     string    `json:"topic"`
	Partition int32     `json:"partition"`
	Kind      string    `json:"kind"`   // topic-authorization, invalid-topic
	Reason    string    `json:"reason"` // the destination's error
	Since     time.Time `json:"since"`
	RetryAt   time.Time `json:"retry_at"`
	Probes    int       `json:"probes"` // retries refused since
}

// quarantine quarantines (or, after a refused probe, keeps quarantined)
// source partition k, and returns when it will be probed.
func (s *legState) quarantine(k tp, kind, reason string) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.quarantined == nil {
		s.quarantined = map[tp]*quarantine{}
	}
	q := s.quarantined[k]
	if q == nil {
		q = &quarantine{since: time.Now(), bo: newBackoff(quarantineMin, quarantineMax)}
		s.quarantined[k] = q
	} else if q.probing {
		q.attempts++
	}
	q.kind, q.reason, q.probing = kind, reason, false
	d := q.bo.next()
	q.retryAt = time.Now().Add(d)
	time.AfterFunc(d, func() { wake(s.notify) })
	return d
}

// quarantinedLocked reports whether batches of k are dropped.
func (s *legState) quarantinedLocked(k tp) bool {
	q := s.quarantined[k]
	return q != nil && !q.probing
}

// probeDue starts probing the quarantined partitions whose backoff ended:
// a new generation, so that the sender resends them from the committed
// progress. It reports whether it started any.
func (s *legState) probeDue() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now, due := time.Now(), false
	for _, q := range s.quarantined {
		if !q.probing && !now.Before(q.retryAt) {
			q.probing, due = true, true
		}
	}
	if due {
		s.resetLocked()
	}
	return due
}

// lift ends k's quarantine after a commit wrote it, and returns it (nil:
// k was not quarantined).
func (s *legState) lift(k tp) *quarantine {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.quarantined[k]
	delete(s.quarantined, k)
	return q
}

// quarantineStatus lists the quarantined partitions and counts them by
// kind.
func (s *legState) quarantineStatus() ([]QuarantinedPartition, map[string]int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []QuarantinedPartition
	n := map[string]int{}
	for k, q := range s.quarantined {
		out = append(out, QuarantinedPartition{Topic: k.Topic, Partition: k.Partition, Kind: q.kind, Reason: q.reason,
			Since: q.since, RetryAt: q.retryAt, Probes: q.attempts})
		n[q.kind]++
	}
	slices.SortFunc(out, func(a, b QuarantinedPartition) int {
		return cmp.Or(strings.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition))
	})
	return out, n
}

// quarantined records a transaction refused for qe's partition: it is
// quarantined, logged and counted.
func (l *inLeg) quarantined(qe *quarantineError) {
	d := l.state.quarantine(qe.k, qe.kind, qe.err.Error())
	l.log.Error("destination refuses a partition; quarantined, the rest of the leg goes on", "leg", l.leg.ID,
		"topic", qe.k.Topic, "partition", qe.k.Partition, "kind", qe.kind, "err", qe.err, "retry_in", d)
	l.quarantineGauge()
}

// recovered ends the quarantine of the partitions a commit wrote.
func (l *inLeg) recovered(res txnResult) {
	lifted := false
	for _, p := range res.progress {
		if q := l.state.lift(p.TP()); q != nil {
			lifted = true
			l.log.Info("quarantined partition written again; recovered", "leg", l.leg.ID, "topic", p.Topic,
				"partition", p.Partition, "kind", q.kind, "quarantined_for", time.Since(q.since).Round(time.Millisecond))
		}
	}
	if lifted {
		l.quarantineGauge()
	}
}

func (l *inLeg) quarantineGauge() {
	_, n := l.state.quarantineStatus()
	for _, kind := range quarantineKinds {
		l.e.m.quarantined.WithLabelValues(l.leg.ID, kind).Set(float64(n[kind]))
	}
}
