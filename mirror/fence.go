package mirror

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

const kindFence = "fence"

// Fence stops a leg from writing to its destination: after a failover the
// destination is the primary, and a gateway of the old direction that comes
// back must not write there. It is a record in ProgressTopic, read by every
// receiver when it (re)opens, and it is enforced by Kafka: Fence re-inits
// the leg's transactional IDs, which bumps their producer epochs, so a
// running receiver's next transaction fails, it reopens, reads the fence and
// stops.
type Fence struct {
	V      int    `json:"v"`
	Kind   string `json:"kind"` // "fence"
	Leg    string `json:"leg"`
	Epoch  uint64 `json:"epoch"` // the route epoch after the failover
	Reason string `json:"reason"`
	At     int64  `json:"at"`               // Unix ms
	Lifted bool   `json:"lifted,omitempty"` // a failback lifts the fence
}

// ErrFenced is returned by a receiver that finds its leg fenced.
var ErrFenced = errors.New("leg is fenced")

func fenceKey(leg string) []byte { return []byte("fence\x00" + leg) }

func decodeFence(b []byte) (*Fence, error) {
	var f Fence
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("decode fence: %w", err)
	}
	if f.V != 1 || f.Kind != kindFence {
		return nil, fmt.Errorf("decode fence: not a version 1 fence")
	}
	return &f, nil
}

// FenceLeg fences a leg at its destination cluster (see Fence) and returns
// the fence written. Records the leg committed before are kept; nothing
// after lands.
func FenceLeg(ctx context.Context, dst []kgo.Opt, leg string, epoch uint64, reason string) (*Fence, error) {
	f := &Fence{V: 1, Kind: kindFence, Leg: leg, Epoch: epoch, Reason: reason, At: time.Now().UnixMilli()}
	if err := writeFence(ctx, dst, f); err != nil {
		return nil, err
	}
	// Bump every shard's producer epoch: a receiver writing the leg now is
	// fenced by the cluster and aborts what it has open.
	for i := range sinkShards {
		cl, err := kgo.NewClient(append(append([]kgo.Opt{}, dst...), kgo.TransactionalID(transactionalID(leg, i)))...)
		if err != nil {
			return nil, err
		}
		_, _, err = cl.ProducerID(ctx)
		cl.Close()
		if err != nil {
			return nil, fmt.Errorf("fence %s: init transactional ID %s: %w", leg, transactionalID(leg, i), err)
		}
	}
	return f, nil
}

// LiftFence lets a leg write again (failback).
func LiftFence(ctx context.Context, dst []kgo.Opt, leg string, epoch uint64, reason string) error {
	return writeFence(ctx, dst, &Fence{V: 1, Kind: kindFence, Leg: leg, Epoch: epoch, Reason: reason, At: time.Now().UnixMilli(), Lifted: true})
}

func writeFence(ctx context.Context, dst []kgo.Opt, f *Fence) error {
	cl, err := kgo.NewClient(dst...)
	if err != nil {
		return err
	}
	defer cl.Close()
	parts, err := ensureProgressTopic(ctx, kadm.NewClient(cl))
	if err != nil {
		return err
	}
	b, _ := json.Marshal(f)
	key := fenceKey(f.Leg)
	rec := &kgo.Record{Topic: ProgressTopic, Partition: hashPartition(key, parts), Key: key, Value: b}
	pcl, err := kgo.NewClient(append(append([]kgo.Opt{}, dst...), kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err != nil {
		return err
	}
	defer pcl.Close()
	if err := pcl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		return fmt.Errorf("write fence of %s: %w", f.Leg, err)
	}
	return nil
}

// LegFence returns the leg's fence at the destination, or nil.
func LegFence(ctx context.Context, dst []kgo.Opt, leg string) (*Fence, error) {
	st, err := loadState(ctx, dst, map[string]bool{leg: true})
	if err != nil {
		return nil, err
	}
	return st.fences[leg], nil
}
