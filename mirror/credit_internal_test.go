package mirror

import (
	"context"
	"testing"
	"time"
)

func TestCreditHighPriorityGoesFirst(t *testing.T) {
	c := newCredit(1<<30, 10, 8_000_000) // 1 MB/s
	c.charge(1_000_000)                  // in debt for about 1 s: long enough for every waiter to queue on a loaded machine
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	order := make(chan int, 6)
	for range 5 {
		go func() {
			if _, err := c.acquire(ctx, "low", 0, 1000); err == nil {
				c.charge(50_000)
				order <- 0
			}
		}()
	}
	for { // the low waiters queue first
		c.mu.Lock()
		n := c.waiting[0]
		c.mu.Unlock()
		if n == 5 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	go func() {
		if _, err := c.acquire(ctx, "high", 10, 1000); err == nil {
			c.charge(50_000)
			order <- 10
		}
	}()
	if first := <-order; first != 10 {
		t.Fatalf("a priority-%d batch went first, ahead of the waiting priority-10 batch", first)
	}
	for range 5 {
		<-order
	}
}

func TestCreditLowPriorityLeavesHalfTheWindow(t *testing.T) {
	c := newCredit(100, 10, 0)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := c.acquire(ctx, "low", 0, 40); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelShort()
	if _, err := c.acquire(short, "low", 0, 20); err == nil {
		t.Fatal("low priority took more than half of the window")
	}
	if _, err := c.acquire(ctx, "high", 10, 60); err != nil {
		t.Fatalf("high priority found no room: %v", err)
	}
}

func TestCreditRateCap(t *testing.T) {
	c := newCredit(1<<30, 0, 80_000_000) // 10 MB/s
	ctx := context.Background()
	start := time.Now()
	sent := 0
	for sent < 5_000_000 {
		if _, err := c.acquire(ctx, "l", 0, 1); err != nil {
			t.Fatal(err)
		}
		c.charge(100_000)
		sent += 100_000
	}
	// 5 MB at 10 MB/s, less the burst (0.5 MB) and the last batch's
	// debt (0.1 MB): at least 0.44 s.
	if took := time.Since(start); took < 430*time.Millisecond {
		t.Fatalf("5 MB went in %v under a 10 MB/s cap", took)
	}
}

// TestCreditBatchRamp: a session's batches start at rampStart raw bytes and
// double with each acknowledgement, up to the link's target.
func TestCreditBatchRamp(t *testing.T) {
	c := newCredit(1<<30, 0, 0)
	const target = 100 << 10
	want := []int64{4 << 10, 8 << 10, 16 << 10, 32 << 10, 64 << 10, target, target}
	for i, w := range want {
		if got := c.batchLimit(target); got != w {
			t.Fatalf("after %d acks the batch limit is %d, want %d", i, got, w)
		}
		seq, err := c.acquire(context.Background(), "l", 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		c.ack([]uint64{seq})
	}
	if got := c.batchLimit(2 << 10); got != 2<<10 {
		t.Fatalf("a target below the ramp gives %d, want the target", got)
	}
	before := c.batchLimit(1 << 30)
	c.ack([]uint64{1 << 40}) // unknown: no step
	if got := c.batchLimit(1 << 30); got != before {
		t.Fatalf("an ack of nothing in flight moved the ramp to %d", got)
	}
	for range 10 {
		seq, err := c.acquire(context.Background(), "l", 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		c.ack([]uint64{seq})
	}
	if got := c.batchLimit(1 << 30); got != rampMost {
		t.Fatalf("the ramp ends at %d, want %d", got, rampMost)
	}
}
