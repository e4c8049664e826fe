package amqpsource

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
)

// dedup is a leg's de-duplication state: for each topic (address), the
// positions given to message-ids that were sent and may not be settled
// at the broker yet. It outlives the leg's sources (one per session) and,
// when path is set, the process: it is written to path before the records
// it names are handed to the sender, so that a restarted gateway knows the
// positions of the messages the broker redelivers.
//
// Its bound: the messages of an address held unsettled are at most the
// receiver's credit, and they are settled in position order, so every
// position below (committed next - credit) has been settled; entries below
// next - 2*credit are dropped (twice, for accepts lost with a connection).
type dedup struct {
	syncMu sync.Mutex // serializes sync's writes of the file; taken before mu
	mu     sync.Mutex
	path   string                      // "" = memory only
	ids    map[string]map[string]int64 // topic → message-id → position
	keep   int64                       // entries kept below the committed next
	dirty  bool
}

func newDedup(path string, keep int64) (*dedup, error) {
	d := &dedup{path: path, ids: map[string]map[string]int64{}, keep: keep}
	if path == "" {
		return d, nil
	}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return d, nil
	case err != nil:
		return nil, fmt.Errorf("de-duplication state: %w", err)
	}
	if err := json.Unmarshal(data, &d.ids); err != nil {
		return nil, fmt.Errorf("de-duplication state %s: %w", path, err)
	}
	if d.ids == nil {
		d.ids = map[string]map[string]int64{}
	}
	return d, nil
}

// resume starts a topic at next, the destination's committed position:
// entries at or past it were not committed (their messages come again
// and get new positions) and are forgotten.
func (d *dedup) resume(topic string, next int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, pos := range d.ids[topic] {
		if pos >= next {
			delete(d.ids[topic], id)
			d.dirty = true
		}
	}
}

// committed reports whether the message with id was given a position
// below next, the committed position: it is at the destination already.
func (d *dedup) committed(topic, id string, next int64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	pos, ok := d.ids[topic][id]
	return ok && pos < next
}

// add records the position given to id.
func (d *dedup) add(topic, id string, pos int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	m := d.ids[topic]
	if m == nil {
		m = map[string]int64{}
		d.ids[topic] = m
	}
	m[id] = pos
	d.dirty = true
}

// prune drops the entries of topic far enough below next (the committed
// position) that their messages are settled.
func (d *dedup) prune(topic string, next int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, pos := range d.ids[topic] {
		if pos < next-d.keep {
			delete(d.ids[topic], id)
			d.dirty = true
		}
	}
}

// size is the number of entries kept, for tests and metrics.
func (d *dedup) size() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, m := range d.ids {
		n += len(m)
	}
	return n
}

// sync writes the state to its file if it changed (write, fsync, rename).
func (d *dedup) sync() error {
	d.syncMu.Lock()
	defer d.syncMu.Unlock()
	d.mu.Lock()
	if d.path == "" || !d.dirty {
		d.mu.Unlock()
		return nil
	}
	data, err := json.Marshal(d.ids)
	d.dirty = false
	d.mu.Unlock()
	if err != nil {
		return err
	}
	tmp := d.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("de-duplication state: %w", err)
	}
	_, werr := f.Write(data)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return fmt.Errorf("de-duplication state %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, d.path); err != nil {
		return fmt.Errorf("de-duplication state: %w", err)
	}
	if dir, err := os.Open(filepath.Dir(d.path)); err == nil {
		dir.Sync() //nolint:errcheck // best effort: the rename is what matters
		dir.Close()
	}
	return nil
}
