package mirror

import (
	"context"
	"errors"
	"log/slog"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/routing/filter"
)

// Filtered legs. A route's filter (routing.Leg.Filter) is evaluated by the
// sending gateway on each source record before the link. A record it
// drops is skipped as a transaction marker is: no data crosses the link,
// but the batch of its partition still ends after it (NextOffset), so the
// leg's progress moves past it, and the offset map at the destination
// keeps a gap there, which translation already resolves to the next
// mirrored record (progress.OffsetMap.Translate: "in a gap: the next
// mirrored record"). When a whole fetch is filtered out an empty batch
// moves the position. A batch's first record may thus start after the
// previous batch's end: the sender covers the gap with an empty batch
// first (continueAt), as it does for compaction gaps.
//
// A record the filter cannot be evaluated on (a missing header or field,
// a value that is not JSON) does not match: it is counted as filtered and
// as a filter error, never stops the leg.
//
// A filtered leg never forwards Kafka batches untouched (passthrough):
// its records must be decoded to be seen.

// filterScratch is a pipeline's reused space for evaluating a filter.
type filterScratch struct {
	rec  filter.Record
	hdrs []filter.Header
}

// filterCount tallies what one call of sendRecords filtered out.
type filterCount struct {
	records, bytes, errors, notJSON int64
	lastErr                         error
}

// match reports whether r passes f, counting it in c when it does not.
func (s *filterScratch) match(f *filter.Filter, r *kgo.Record, c *filterCount) bool {
	s.hdrs = s.hdrs[:0]
	size := len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		s.hdrs = append(s.hdrs, filter.Header{Key: h.Key, Value: h.Value})
		size += len(h.Key) + len(h.Value)
	}
	s.rec = filter.Record{Topic: r.Topic, Partition: r.Partition, Key: r.Key, Headers: s.hdrs, Timestamp: r.Timestamp, Value: r.Value}
	ok, err := f.Match(&s.rec)
	s.rec = filter.Record{}
	if ok {
		return true
	}
	c.records++
	c.bytes += int64(size)
	if err != nil {
		c.errors++
		if errors.Is(err, filter.ErrNotJSON) {
			c.notJSON++
		}
		c.lastErr = err
	}
	return false
}

// filtered adds what a sendRecords call filtered out to the leg's stats
// and metrics; it logs the first filter error of the leg and then one in
// filterLogEvery.
func (o *outLeg) filtered(p *outPeer, c *filterCount) {
	if c.records == 0 {
		return
	}
	o.stats.filteredOut(c.records, c.bytes, c.errors, c.lastErr)
	m, leg, route := p.e.m, o.leg.ID, o.leg.Route.Name
	m.filteredRecords.WithLabelValues(leg, route).Add(float64(c.records))
	m.filteredBytes.WithLabelValues(leg, route).Add(float64(c.bytes))
	if c.errors == 0 {
		return
	}
	if n := c.errors - c.notJSON; n > 0 {
		m.filterErrors.WithLabelValues(leg, route, "eval").Add(float64(n))
	}
	if c.notJSON > 0 {
		m.filterErrors.WithLabelValues(leg, route, "not-json").Add(float64(c.notJSON))
	}
	before := o.filterErrs.Add(c.errors) - c.errors
	if before == 0 || before/filterLogEvery != (before+c.errors)/filterLogEvery {
		p.log.Log(context.Background(), slog.LevelWarn, "route filter failed on records; they do not match", "leg", leg,
			"errors", c.errors, "errors_total", before+c.errors, "err", c.lastErr)
	}
}

// filterLogEvery is how many filter errors pass between two log lines.
const filterLogEvery = 10_000
