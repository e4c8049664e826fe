package kraw

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Hanging transactions.
//
// A transaction coordinator writes a transaction's COMMIT or ABORT markers
// to its partitions after it has logged the decision. Kafka skips the
// markers of a partition that has no leader at that moment, taking it for
// deleted (its log says "Couldn't find leader endpoint for partitions ...
// these partitions are likely deleted already and hence can be skipped"),
// and then records the transaction as complete. A single-replica partition
// whose broker has just restarted after a crash is briefly without a
// leader, and that is when a coordinator re-sends the markers of the
// transactions it found prepared in its log: seen against Apache Kafka
// 4.3.1 after a SIGKILL.
//
// The transaction's records then hang in those partitions: invisible to
// read_committed readers and holding the last stable offset back, until
// the same producer ID writes its next marker there, which ends them with
// that marker's outcome. A transactional writer that restarts, reads its
// committed progress (read_committed, up to the last stable offset) and
// goes on writing therefore sees the hanging transaction's progress as
// never written, writes its records again, and its next commit commits
// both copies.
//
// CommitHanging ends such transactions first, with the outcome their
// coordinator decided when the decision was a commit and the one the next
// marker would give them anyway: commit.

// HangingPartition is a partition where a producer ID has a transaction
// open that its coordinator no longer tracks.
type HangingPartition struct {
	Topic     string
	Partition int32
	Epoch     int16 // the producer epoch that wrote the open records
	Start     int64 // offset of the first open record
}

func (h HangingPartition) String() string {
	return fmt.Sprintf("%s/%d from offset %d (epoch %d)", h.Topic, h.Partition, h.Start, h.Epoch)
}

// FindHanging returns the partitions of topics where producerID has an
// open transaction (DescribeProducers). The caller calls it right after
// InitProducerID, which completes whatever transaction the coordinator
// still tracks, so an open one left is hanging. Topics that do not exist
// are skipped; partitions the broker will not describe (no Read access, an
// old broker) are returned in skipped with the reason.
func FindHanging(ctx context.Context, cl *kgo.Client, producerID int64, topics []string) (hanging []HangingPartition, skipped []string, err error) {
	if len(topics) == 0 {
		return nil, nil, nil
	}
	adm := kadm.NewClient(cl)
	md, err := adm.Metadata(ctx, topics...)
	if err != nil {
		return nil, nil, fmt.Errorf("metadata: %w", err)
	}
	set := kadm.TopicsSet{}
	for _, t := range md.Topics {
		if t.Err != nil {
			if !errors.Is(t.Err, kerr.UnknownTopicOrPartition) {
				skipped = append(skipped, t.Topic+": "+t.Err.Error())
			}
			continue
		}
		for _, p := range t.Partitions {
			set.Add(t.Topic, p.Partition)
		}
	}
	if len(set) == 0 {
		return nil, skipped, nil
	}
	described, err := adm.DescribeProducers(ctx, set)
	if err != nil {
		return nil, skipped, fmt.Errorf("describe producers: %w", err)
	}
	for _, t := range described {
		for _, p := range t.Partitions {
			if p.Err != nil {
				skipped = append(skipped, fmt.Sprintf("%s/%d: %v", t.Topic, p.Partition, p.Err))
				continue
			}
			if dp, ok := p.ActiveProducers[producerID]; ok && dp.CurrentTxnStartOffset >= 0 {
				hanging = append(hanging, HangingPartition{Topic: t.Topic, Partition: p.Partition, Epoch: dp.ProducerEpoch, Start: dp.CurrentTxnStartOffset})
			}
		}
	}
	slices.SortFunc(hanging, func(a, b HangingPartition) int {
		if c := strings.Compare(a.Topic, b.Topic); c != 0 {
			return c
		}
		return int(a.Partition - b.Partition)
	})
	return hanging, skipped, nil
}

// CommitHanging commits the hanging transactions of cl's producer ID in
// parts: it adds them to a transaction of cl's current epoch
// (AddPartitionsToTxn) and ends it with commit (EndTxn), so the coordinator
// writes COMMIT markers there, which end the open records with the
// transaction. cl must be a transactional client configured with
// [ClientOpts] (requests before KIP-890 part 2, so EndTxn does not bump
// the epoch) that has no transaction of its own open; it is not usable for
// transactions afterwards (close it). The markers are written
// asynchronously: the next InitProducerID of the transactional ID waits for
// them.
func CommitHanging(ctx context.Context, cl *kgo.Client, transactionalID string, parts []HangingPartition) error {
	if len(parts) == 0 {
		return nil
	}
	id, epoch, err := cl.ProducerID(ctx)
	if err != nil {
		return fmt.Errorf("kraw: producer ID: %w", err)
	}
	p := NewTxnProducer(cl, transactionalID)
	keys := make([]partKey, len(parts))
	for i, h := range parts {
		keys[i] = partKey{h.Topic, h.Partition}
	}
	p.mu.Lock()
	err = p.addPartitionsLocked(ctx, id, epoch, keys)
	p.mu.Unlock()
	if err != nil {
		return err
	}
	req := kmsg.NewPtrEndTxnRequest()
	req.TransactionalID = transactionalID
	req.ProducerID = id
	req.ProducerEpoch = epoch
	req.Commit = true
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return fmt.Errorf("kraw: end transaction %q: %w", transactionalID, err)
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return fmt.Errorf("kraw: end transaction %q: %w", transactionalID, err)
	}
	return nil
}
