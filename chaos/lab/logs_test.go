package lab_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/chaos/lab"
)

// recordingHandler keeps every log record's level, message and flattened
// attribute keys (group prefixes joined with ".", as the text and JSON
// handlers write them).
type recordingHandler struct {
	mu    *sync.Mutex
	recs  *[]logLine
	attrs []string // keys of With attributes
	group string
}

type logLine struct {
	level slog.Level
	msg   string
	keys  []string
	text  string
}

func newRecordingHandler() *recordingHandler {
	return &recordingHandler{mu: &sync.Mutex{}, recs: &[]logLine{}}
}

// Enabled is every level: attributes must not repeat at any; the other
// checks read info and above, what an operator sees by default.
func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	keys := slices.Clone(h.attrs)
	var b strings.Builder
	fmt.Fprintf(&b, "%s %q", r.Level, r.Message)
	r.Attrs(func(a slog.Attr) bool {
		keys = append(keys, h.prefix()+a.Key)
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	h.mu.Lock()
	*h.recs = append(*h.recs, logLine{r.Level, r.Message, keys, b.String()})
	h.mu.Unlock()
	return nil
}

func (h *recordingHandler) prefix() string {
	if h.group == "" {
		return ""
	}
	return h.group + "."
}

func (h *recordingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	n := *h
	n.attrs = slices.Clone(h.attrs)
	for _, a := range as {
		n.attrs = append(n.attrs, h.prefix()+a.Key)
	}
	return &n
}

func (h *recordingHandler) WithGroup(name string) slog.Handler {
	n := *h
	n.group = h.prefix() + name
	return &n
}

func (h *recordingHandler) lines() []logLine {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(*h.recs)
}

// TestLogsAnOperatorCanRead: a lab mirrors 30,000 records in both modes
// and both gateways stop cleanly. Their logs must hold no WARN or ERROR
// (nothing went wrong), no line with an attribute twice (at any level),
// and no info message repeated per batch (a state change is one line).
func TestLogsAnOperatorCanRead(t *testing.T) {
	bothModes(t, func(t *testing.T, pass bool) {
		h := newRecordingHandler()
		o := lab.Options{Passthrough: pass, Topics: e2eTopics, Partitions: 4, Admin: true, Gossip: true, Logger: slog.New(h)}
		l, err := lab.New(o)
		if err != nil {
			t.Fatal(err)
		}
		startGateways(t, l)
		produce(t, l, 30_000, 9)
		waitExact(t, l, 30_000, time.Minute)
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		lines := h.lines()
		perMsg := map[string]int{}
		for _, ln := range lines {
			if ln.level >= slog.LevelWarn {
				t.Errorf("%s on a clean run and shutdown: %s", ln.level, ln.text)
			}
			seen := map[string]bool{}
			for _, k := range ln.keys {
				if seen[k] {
					t.Errorf("attribute %q twice: %s", k, ln.text)
				}
				seen[k] = true
			}
			if ln.level >= slog.LevelInfo {
				perMsg[ln.msg]++
			}
		}
		// 30,000 records travel in hundreds of batches: a message logged
		// that often is logged per batch. State changes (a topic mirrored,
		// a session opened) are one line per topic, partition or session.
		for msg, n := range perMsg {
			if n > 24 {
				t.Errorf("%q logged %d times in one run: once per batch?", msg, n)
			}
		}
		t.Logf("%d log lines, %d distinct messages", len(lines), len(perMsg))
	})
}
