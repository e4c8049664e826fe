package mirror

import (
	"errors"
	"testing"
)

// TestToOpenWaitsForTransactions: after one shard's transaction fails, the
// shard is not reopened (nor the leg's progress loaded) while another shard
// is still inside a transaction, whose open transaction would hide progress
// the failed shard had committed; once that transaction ends, the
// coordinator is woken and the shard is reopened.
func TestToOpenWaitsForTransactions(t *testing.T) {
	s := &legState{leg: "l", notify: make(chan struct{}, 1)}
	a := &shard{idx: 0, notify: make(chan struct{}, 1), sink: &sink{}, ready: true}
	b := &shard{idx: 1, notify: make(chan struct{}, 1), sink: &sink{}, ready: true}
	s.setShards([]*shard{a, b})
	// Both shards inside a transaction, as take leaves them.
	s.mu.Lock()
	for _, sh := range []*shard{a, b} {
		s.writing++
		sh.busy = true
	}
	s.mu.Unlock()

	s.finish(a, errors.New("destination broker gone"))
	<-s.notify // the failure wakes the coordinator
	if got := s.toOpen(); len(got) != 0 {
		t.Fatalf("toOpen while shard 1 is inside a transaction = %d shards, want none", len(got))
	}
	s.finish(b, nil)
	select {
	case <-s.notify:
	default:
		t.Fatal("the last transaction's end did not wake the coordinator")
	}
	if got := s.toOpen(); len(got) != 1 || got[0] != a {
		t.Fatalf("toOpen after the transactions ended = %v, want shard 0 alone", got)
	}
}
