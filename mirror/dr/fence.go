package dr

import (
	"context"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/mirror/progress"
)

// FenceLeg fences a leg at its destination cluster dst (see progress.Fence)
// and returns the fence written. Records the leg committed before are kept;
// nothing after lands.
func FenceLeg(ctx context.Context, dst []kgo.Opt, leg string, epoch uint64, reason string) (*progress.Fence, error) {
	store, err := progress.Open(ctx, dst)
	if err != nil {
		return nil, err
	}
	defer store.Close()
	return store.Fence(ctx, leg, epoch, reason)
}

// LiftFence lets a leg write to its destination cluster dst again.
func LiftFence(ctx context.Context, dst []kgo.Opt, leg string, epoch uint64, reason string) error {
	store, err := progress.Open(ctx, dst)
	if err != nil {
		return err
	}
	defer store.Close()
	return store.LiftFence(ctx, leg, epoch, reason)
}

// LegFence returns the leg's fence at its destination cluster dst, or nil.
func LegFence(ctx context.Context, dst []kgo.Opt, leg string) (*progress.Fence, error) {
	store, err := progress.Open(ctx, dst)
	if err != nil {
		return nil, err
	}
	defer store.Close()
	st, err := store.Load(ctx, leg)
	if err != nil {
		return nil, err
	}
	return st.Fence(leg), nil
}
