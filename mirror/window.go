package mirror

import (
	"fmt"
	"log/slog"
	"sync"

	"github.com/meridian-gw/meridian/transport"
)

// What a batch counts against the credit window, on both sides (see
// transport/PROTOCOL.md, section 6): what holding it decoded takes, its
// raw size plus minBatchCost for the batch (its queue entry, frame and
// bookkeeping) plus recordCost per record and per header (a decoded
// transport.Record is 88 bytes, a Header 40, on 64-bit platforms, whatever
// their keys and values). So the window bounds the receiver's heap in
// bytes whatever the records' sizes: a flood of empty batches, of empty
// records, or of 1 KB records (about 9% over their raw size decoded).
const (
	minBatchCost = 256
	recordCost   = 96
)

// batchCost is what b counts against the credit window.
func batchCost(b *transport.Batch) int64 {
	n := len(b.Records)
	for i := range b.Records {
		n += len(b.Records[i].Headers)
	}
	return int64(b.RawSize()) + minBatchCost + recordCost*int64(n)
}

// recvWindow enforces, on the receiving end of one session, the credit
// window the receiver granted in its Welcome: the cost of the batches
// received and not yet released (acknowledged, or dropped before a
// Resume) may not exceed the window plus one batch. A sender that keeps
// to its window never exceeds that, since the receiver releases a batch
// before it sends the Ack or the Resume that releases it at the sender,
// and counts nothing the sender does not.
//
// Batches held while their topic is being prepared stay charged: they
// are what a sender that ignores credit would pile up. The engine sends no
// Credit frames, so the window is the Welcome's for the whole session; a
// receiver that grew it with Credit would have to grow limit first, and
// keep the largest window granted until the sender has seen a shrink.
type recvWindow struct {
	window, limit int64

	mu   sync.Mutex
	held int64 // cost of the batches received and not released
}

// newRecvWindow returns the window of a session granted window bytes
// (≤ 0: unlimited, bounded as transport.DefaultWindow × 4) with batches of
// at most maxBatch raw bytes (≤ 0: 1 MiB, as a sender assumes).
func newRecvWindow(window, maxBatch int64) *recvWindow {
	if window <= 0 {
		window = 4 * transport.DefaultWindow
	}
	if maxBatch <= 0 {
		maxBatch = 1 << 20
	}
	return &recvWindow{window: window, limit: window + max(maxBatch, minBatchCost)}
}

// charge counts a received batch of the given cost, or returns why the
// sender broke its window (the batch is then not counted). A batch alone
// is always accepted, as a sender may send one costing more than the
// whole window when nothing else is in flight (the decoder's limits bound
// it).
func (w *recvWindow) charge(cost int64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.held > 0 && w.held+cost > w.limit {
		return fmt.Errorf("sender exceeded its credit window: %d bytes unacknowledged with this batch of %d, window %d plus one batch", w.held+cost, cost, w.window)
	}
	w.held += cost
	return nil
}

// release returns what charge counted for a batch that was acknowledged
// or dropped.
func (w *recvWindow) release(cost int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.held -= cost
}

// inFlight is the cost of the batches held now.
func (w *recvWindow) inFlight() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.held
}

// violation ends a session whose peer broke the protocol: the peer gets
// Error protocol with why, the violation is counted (violations, by
// reason) and the peer's redials are refused for a while (penalties).
func (e *Engine) violation(conn transport.Conn, log *slog.Logger, peer, reason string, err error) {
	d := e.penalties.violated(peer)
	e.m.violations.WithLabelValues(peer, reason).Inc()
	log.Warn("peer broke the protocol; ending its session", "reason", reason, "err", err, "refused_for", d)
	conn.Close(&transport.Error{Code: transport.ErrCodeProtocol, Message: err.Error()})
}
