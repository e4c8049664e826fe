package mirror

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/routing"
	"github.com/meridian-gw/meridian/topology"
	"github.com/meridian-gw/meridian/transport"
)

// windowConn is the receiving end of a session as far as the window goes:
// every batch sent is charged to a recvWindow, never released (no acks).
type windowConn struct {
	transport.Conn // nil: only Send is called
	win            *recvWindow
	sent           atomic.Int64
	broke          atomic.Pointer[error]
}

func (c *windowConn) Send(_ context.Context, f transport.Frame) error {
	if err := c.win.charge(batchCost(f.(*transport.Batch))); err != nil {
		c.broke.Store(&err)
		return err
	}
	c.sent.Add(1)
	return nil
}

// A sender's own accounting keeps it inside the receiver's window even
// when every batch is empty (a fetch of transaction markers alone): both
// charge a batch its raw size plus minBatchCost. A sender that counted raw bytes
// only would send window/3 empty batches, and lose its session.
func TestSenderChargesTheMinimumBatchCost(t *testing.T) {
	const window, maxBatch = 64 << 10, 64 << 10
	conn := &windowConn{win: newRecvWindow(window, maxBatch)}
	leg := &routing.Leg{ID: "r:west/kafka", Route: &topology.Route{Name: "r"}}
	lr := &legRunner{out: &outLeg{leg: leg}, p: &outPeer{e: &Engine{m: newMetrics(nil)}},
		conn: conn, cr: newCredit(window, 0, 0), maxBatch: maxBatch, maxFrame: maxBatch}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	var err error
	for i := int64(0); err == nil; i++ {
		// Empty batches, as after a fetch of markers: raw size 3 bytes.
		err = lr.send(ctx, &transport.Batch{Leg: leg.ID, Topic: "t.a", NextOffset: i + 1, HighWatermark: i + 1})
	}
	if p := conn.broke.Load(); p != nil {
		t.Fatalf("the sender broke the receiver's window after %d empty batches: %v", conn.sent.Load(), *p)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("send: %v, want it to wait for credit until the deadline", err)
	}
	// Each costs its 3 raw bytes plus minBatchCost.
	if got, want := conn.sent.Load(), int64(window/(3+minBatchCost)); got != want {
		t.Fatalf("the sender sent %d empty batches in a window of %d, want %d (each costs %d)", got, window, want, 3+minBatchCost)
	}
}
