package mirror

import (
	"sync"
	"time"

	"github.com/meridian-gw/meridian/mirror/progress"
	"github.com/meridian-gw/meridian/transport"
)

// legStats is a leg's live state for /status. Safe for concurrent use.
type legStats struct {
	mu          sync.Mutex
	records     int64
	rawBytes    int64
	wireBytes   int64
	deadLetters int64
	txns        int64
	// failedTxns counts destination transactions that failed; failStreak
	// those since the last commit.
	failedTxns int64
	failStreak int
	// gapRecords counts source records retention deleted before they were
	// mirrored; gaps are the latest such ranges (maxGapsShown).
	gapRecords int64
	gaps       []SourceGap
	// What the (outbound) leg's filter dropped, and the records it could
	// not be evaluated on (counted in filteredRecords too).
	filteredRecords, filteredBytes, filterErrors int64
	lastFilterErr                                string
	// Records dropped before the link because they would loop, their
	// bytes, and records whose origin header was malformed (loops.go).
	loopRecords, loopBytes, originMalformed int64
	lastErr                                 string
	lastErrAt                               time.Time
	parts                                   map[tp]partStat
}

type partStat struct{ next, hwm, lastTS int64 }

func (s *legStats) setErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		s.lastErr = ""
		return
	}
	s.lastErr, s.lastErrAt = err.Error(), time.Now()
}

// failedTxn counts a failed destination transaction.
func (s *legStats) failedTxn() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failedTxns++
	s.failStreak++
}

// txnFailures returns the failed transactions since the last commit, and
// in all.
func (s *legStats) txnFailures() (streak int, total int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failStreak, s.failedTxns
}

// sourceGap records a range of source records lost to retention.
func (s *legStats) sourceGap(g SourceGap) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gapRecords += g.Records
	if len(s.gaps) == maxGapsShown {
		s.gaps = append(s.gaps[:0], s.gaps[1:]...)
	}
	s.gaps = append(s.gaps, g)
}

// filteredOut counts records the leg's filter dropped: records of bytes
// (key, value, headers), errors of them because it failed on them.
func (s *legStats) filteredOut(records, bytes, errors int64, lastErr error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.filteredRecords += records
	s.filteredBytes += bytes
	s.filterErrors += errors
	if lastErr != nil {
		s.lastFilterErr = lastErr.Error()
	}
}

// loopsDropped counts records dropped as loops and malformed origin
// headers replaced.
func (s *legStats) loopsDropped(records, bytes, malformed int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loopRecords += records
	s.loopBytes += bytes
	s.originMalformed += malformed
}

// restore seeds the partition positions from committed progress.
func (s *legStats) restore(c map[tp]*progress.Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.parts = make(map[tp]partStat, len(c))
	for k, p := range c {
		s.parts[k] = partStat{next: p.Next, hwm: p.HWM, lastTS: p.LastTS}
	}
}

func (s *legStats) committedTxn(res txnResult, batches []*transport.Batch, c map[tp]*progress.Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records += int64(res.records)
	s.rawBytes += int64(res.rawBytes)
	s.deadLetters += int64(res.deadLetters)
	s.txns++
	s.failStreak = 0
	if s.parts == nil {
		s.parts = map[tp]partStat{}
	}
	for _, b := range batches {
		s.wireBytes += int64(b.WireSize)
		k := tp{Topic: b.Topic, Partition: b.Partition}
		if p := c[k]; p != nil {
			s.parts[k] = partStat{next: p.Next, hwm: p.HWM, lastTS: p.LastTS}
		}
	}
}

func (s *legStats) sent(b *transport.Batch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records += int64(b.Len())
	s.rawBytes += int64(payloadBytes(b))
	s.wireBytes += int64(b.WireSize)
	if s.parts == nil {
		s.parts = map[tp]partStat{}
	}
	k := tp{Topic: b.Topic, Partition: b.Partition}
	ps := partStat{next: b.NextOffset, hwm: b.HighWatermark}
	ps.lastTS = lastTimestamp(b)
	s.parts[k] = ps
}

// lag sums the records between each partition's position and its high
// watermark, and reports how old the newest mirrored record of a lagging
// partition is.
func (s *legStats) lag() (records int64, seconds float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now().UnixMilli()
	for _, p := range s.parts {
		if d := p.hwm - p.next; d > 0 {
			records += d
			if p.lastTS > 0 {
				if sec := float64(now-p.lastTS) / 1000; sec > seconds {
					seconds = sec
				}
			}
		}
	}
	return records, seconds
}

// LegStatus is one leg in a gateway's status.
type LegStatus struct {
	Leg       string `json:"leg"`
	Route     string `json:"route"`
	Direction string `json:"direction"` // out (this gateway reads the source) or in (it writes the destination)
	From      string `json:"from"`
	To        string `json:"to"`
	Peer      string `json:"peer,omitempty"`
	// Path is how the leg travels now: "direct", or "via REGION" while
	// its direct link is down and it relays (docs/relays.md). On an
	// inbound leg, from the session that feeds it (Peer is then the
	// relay). PathSwitches counts the outbound leg's switches, and
	// PathSince is when the current path was chosen (empty: never
	// switched).
	Path         string `json:"path,omitempty"`
	PathSwitches int64  `json:"path_switches,omitempty"`
	PathSince    string `json:"path_since,omitempty"`
	// RerouteSeconds is how long the (outbound) leg's last switch onto a
	// relay took, from its direct link being declared down to the
	// destination's first Resume over the relay (0: it never relayed).
	RerouteSeconds float64 `json:"reroute_seconds,omitempty"`
	Connected      bool    `json:"connected"`
	Records        int64   `json:"records"`
	RawBytes       int64   `json:"raw_bytes"`
	WireBytes      int64   `json:"wire_bytes"`
	DeadLetters    int64   `json:"dead_letters"`
	// FailedTxns counts the (inbound) leg's destination transactions that
	// failed; each is retried after a capped, jittered backoff.
	FailedTxns int64 `json:"failed_txns,omitempty"`
	// SourceGapRecords counts the (outbound) leg's source records that
	// retention deleted before they were mirrored; SourceGaps are the
	// latest such ranges, with the offsets lost.
	SourceGapRecords int64       `json:"source_gap_records,omitempty"`
	SourceGaps       []SourceGap `json:"source_gaps,omitempty"`
	// Filter is the route's filter (routes[].filter), on both ends.
	// FilteredRecords and FilteredBytes (key, value and headers) count
	// what the (outbound) leg's filter dropped before the link;
	// FilterErrors those of them it could not be evaluated on (a missing
	// field, a value that is not JSON), the latest reason in
	// LastFilterError.
	Filter          string `json:"filter,omitempty"`
	FilteredRecords int64  `json:"filtered_records,omitempty"`
	FilteredBytes   int64  `json:"filtered_bytes,omitempty"`
	FilterErrors    int64  `json:"filter_errors,omitempty"`
	LastFilterError string `json:"last_filter_error,omitempty"`
	// LoopDroppedRecords and LoopDroppedBytes count what the (outbound)
	// leg did not send because it would loop: a record whose origin
	// header names the destination, or a batch or record one of
	// Meridian's sinks wrote at the source from a cluster the
	// destination reaches (docs/active-active.md). OriginMalformed
	// counts records whose meridian.origin header was malformed and was
	// replaced (they were sent as produced at the source).
	LoopDroppedRecords int64 `json:"loop_dropped_records,omitempty"`
	LoopDroppedBytes   int64 `json:"loop_dropped_bytes,omitempty"`
	OriginMalformed    int64 `json:"origin_malformed,omitempty"`
	// Quarantined are the (inbound) leg's partitions the destination
	// refuses (quarantine.go), by topic and partition.
	Quarantined []QuarantinedPartition `json:"quarantined,omitempty"`
	Partitions  int                    `json:"partitions"`
	LagRecords  int64                  `json:"lag_records"`
	LagSeconds  float64                `json:"lag_seconds"`
	LastError   string                 `json:"last_error,omitempty"`
	// Fenced says why an inbound leg does not write: its route was failed
	// over and the destination is the primary now.
	Fenced string `json:"fenced,omitempty"`
	// Consumer groups whose offsets this (inbound) leg commits at the
	// destination, and those skipped because they have members there.
	SyncedGroups []string `json:"synced_groups,omitempty"`
	ActiveGroups []string `json:"active_groups,omitempty"`
	// A shared leg (several gateways of the source region send it):
	// ShareGroup is the consumer group on the source cluster that splits
	// its partitions; SharedPartitions ("topic/partition", outbound) those
	// it assigns this gateway; Shares (inbound) every sending gateway's
	// claim as the receiver holds it.
	ShareGroup       string        `json:"share_group,omitempty"`
	SharedPartitions []string      `json:"shared_partitions,omitempty"`
	Shares           []ShareStatus `json:"shares,omitempty"`
}

func (s *legStats) fill(st *LegStatus) {
	r, sec := s.lag()
	s.mu.Lock()
	defer s.mu.Unlock()
	st.Records, st.RawBytes, st.WireBytes, st.DeadLetters = s.records, s.rawBytes, s.wireBytes, s.deadLetters
	st.Partitions = len(s.parts)
	st.LagRecords, st.LagSeconds = r, sec
	st.LastError = s.lastErr
	st.FailedTxns = s.failedTxns
	st.SourceGapRecords, st.SourceGaps = s.gapRecords, append([]SourceGap(nil), s.gaps...)
	st.FilteredRecords, st.FilteredBytes, st.FilterErrors, st.LastFilterError = s.filteredRecords, s.filteredBytes, s.filterErrors, s.lastFilterErr
	st.LoopDroppedRecords, st.LoopDroppedBytes, st.OriginMalformed = s.loopRecords, s.loopBytes, s.originMalformed
}
