package mirror

import (
	"errors"

	"github.com/twmb/franz-go/pkg/kerr"
)

// Refusal kinds: the reason label of meridian_dead_letters_total and the
// value of a dead letter's HeaderDLKind header.
const (
	refuseTooLarge      = "too-large"         // record or batch over the destination's max.message.bytes
	refuseTimestamp     = "invalid-timestamp" // outside the destination's message.timestamp.* window
	refuseInvalidRecord = "invalid-record"    // the destination's validation (a key a compacted topic needs, ...)
	refuseCorrupt       = "corrupt"           // the batch's CRC or framing, as the destination read it
	refuseOverLimit     = "over-batch-limit"  // a passed-through Kafka batch decompressing beyond the receiver's batch limit (never written)
)

// refusalKinds are every kind above, for the series a leg starts with.
var refusalKinds = []string{refuseTooLarge, refuseTimestamp, refuseInvalidRecord, refuseCorrupt, refuseOverLimit}

// refusals are the destination's produce errors that no retry changes,
// classified in this one place: per record (the same record is refused
// again however often it is written: dead-lettered) or per partition
// (every record of the partition is, until someone changes the
// destination, an ACL or a rename rule: quarantined, quarantine.go).
// Everything else a produce fails with (leader moves, timeouts, fencing,
// policies) fails the transaction, which is retried with backoff.
var refusals = []struct {
	err       *kerr.Error
	kind      string
	partition bool
}{
	{kerr.MessageTooLarge, refuseTooLarge, false},
	{kerr.RecordListTooLarge, refuseTooLarge, false},
	{kerr.InvalidTimestamp, refuseTimestamp, false},
	{kerr.InvalidRecord, refuseInvalidRecord, false},
	{kerr.CorruptMessage, refuseCorrupt, false},
	{kerr.TopicAuthorizationFailed, quarantineAuthz, true},
	{kerr.InvalidTopicException, quarantineInvalidTopic, true},
}

func classify(err error, partition bool) string {
	for _, r := range refusals {
		if r.partition == partition && errors.Is(err, r.err) {
			return r.kind
		}
	}
	return ""
}

// recordRefusal returns the kind of a produce error that refuses a record
// for good ("" if err is not one).
func recordRefusal(err error) string { return classify(err, false) }

// partitionRefusal returns the quarantine kind of a produce error that
// refuses a whole partition ("" if err is not one).
func partitionRefusal(err error) string { return classify(err, true) }

// refusal is why the destination will never accept a source record.
type refusal struct {
	kind   string // one of the refuse* kinds
	reason string // for people: the destination's error
}

// poisonRecord remembers that the destination refuses record off of
// partition k for good: the next attempt dead-letters it.
func (s *sink) poisonRecord(k tp, off int64, r refusal) {
	if s.poison == nil {
		s.poison = map[tp]map[int64]refusal{}
	}
	if s.poison[k] == nil {
		s.poison[k] = map[int64]refusal{}
	}
	s.poison[k][off] = r
}

// isolate makes the next attempt write partition k's records one per
// produce batch, so that a refusal of a batch of several names its record.
func (s *sink) isolate(k tp) {
	if s.solo == nil {
		s.solo = map[tp]bool{}
	}
	s.solo[k] = true
}
