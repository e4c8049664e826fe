package progress

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Fence stops a leg from writing to its destination: after a failover the
// destination is the primary, and a gateway of the old direction that comes
// back must not write there. It is a record in Topic, read by every receiver
// when it (re)opens, and it is enforced by Kafka: Store.Fence re-inits the
// leg's transactional IDs, which bumps their producer epochs, so a running
// receiver's next transaction fails, it reopens, reads the fence and stops.
type Fence struct {
	V      int    `json:"v"`
	Kind   string `json:"kind"` // KindFence
	Leg    string `json:"leg"`
	Epoch  uint64 `json:"epoch"` // the route epoch after the failover
	Reason string `json:"reason"`
	At     int64  `json:"at"`               // Unix ms
	Lifted bool   `json:"lifted,omitempty"` // a failback lifts the fence
}

func fenceKey(leg string) []byte { return []byte("fence\x00" + leg) }

func decodeFence(b []byte) (*Fence, error) {
	if len(b) > MaxValueBytes {
		return nil, fmt.Errorf("decode fence: value of %d bytes exceeds the limit of %d", len(b), MaxValueBytes)
	}
	var f Fence
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("decode fence: %w", err)
	}
	if f.V != 1 || f.Kind != KindFence {
		return nil, fmt.Errorf("decode fence: not a version 1 fence")
	}
	return &f, nil
}

// Shards is how many transactional producers write one leg, each owning the
// partitions that hash to it, so that transactions of different partitions
// are in flight at once. Changing it changes transactional IDs: keep it
// fixed across versions.
const Shards = 4

// TransactionalID is the transactional ID of shard of leg: it fences older
// instances writing the same shard.
func TransactionalID(leg string, shard int) string {
	return "meridian-" + leg + "#" + strconv.Itoa(shard)
}

// Fence fences a leg at the store's cluster (see Fence) and returns the
// fence written. Records the leg committed before are kept; nothing after
// lands.
func (s *Store) Fence(ctx context.Context, leg string, epoch uint64, reason string) (*Fence, error) {
	f := &Fence{V: 1, Kind: KindFence, Leg: leg, Epoch: epoch, Reason: reason, At: time.Now().UnixMilli()}
	if err := s.writeFence(ctx, f); err != nil {
		return nil, err
	}
	// Bump every shard's producer epoch: a receiver writing the leg now is
	// fenced by the cluster and aborts what it has open.
	for i := range Shards {
		id := TransactionalID(leg, i)
		cl, err := kgo.NewClient(append(append([]kgo.Opt{}, s.opts...), kgo.TransactionalID(id))...)
		if err != nil {
			return nil, err
		}
		_, _, err = cl.ProducerID(ctx)
		cl.Close()
		if err != nil {
			return nil, fmt.Errorf("fence %s: init transactional ID %s: %w", leg, id, err)
		}
	}
	return f, nil
}

// LiftFence lets a leg write again (failback).
func (s *Store) LiftFence(ctx context.Context, leg string, epoch uint64, reason string) error {
	return s.writeFence(ctx, &Fence{V: 1, Kind: KindFence, Leg: leg, Epoch: epoch, Reason: reason, At: time.Now().UnixMilli(), Lifted: true})
}

func (s *Store) writeFence(ctx context.Context, f *Fence) error {
	b, _ := json.Marshal(f)
	if err := s.write(ctx, fenceKey(f.Leg), b); err != nil {
		return fmt.Errorf("write fence of %s: %w", f.Leg, err)
	}
	return nil
}
