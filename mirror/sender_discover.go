package mirror

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/meridian-gw/meridian/transport"
)

// discoverer finds the leg's topics and partitions at the source, announces
// new ones to the receiver and adds them to the consumer.
type discoverer struct {
	lr        *legRunner
	srcs      []partitionAdder // the pipelines' sources; partitions are dealt round-robin
	next      int
	adm       *kadm.Client
	positions map[tp]int64
	// progressed: topics with a position in the Resume (built by known).
	progressed map[string]bool
	consumed   map[string]int32             // topic → partitions being consumed
	announced  map[string]map[string]string // topic → configs last announced
	// owns, when not nil, are the only partitions consumed (a shared leg:
	// those its share group assigns this gateway).
	owns map[tp]bool
}

func (d *discoverer) loop(ctx context.Context) {
	t := time.NewTicker(d.lr.out.leg.Discover())
	defer t.Stop()
	for {
		if err := d.once(ctx); err != nil && ctx.Err() == nil {
			d.lr.p.log.Warn("topic discovery", "leg", d.lr.out.leg.ID, "err", err)
			d.lr.out.stats.setErr(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (d *discoverer) once(ctx context.Context) error {
	leg := d.lr.out.leg
	td, err := d.adm.ListTopics(ctx)
	if err != nil {
		return fmt.Errorf("list source topics: %w", err)
	}
	var names []string
	for _, name := range td.Names() {
		if td[name].Err == nil && leg.Match(name) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	if len(names) == 0 {
		return nil
	}
	// One request for every routed topic's configs: a change reaches the
	// destination within one discovery interval, like a partition added.
	configs, err := d.topicConfigs(ctx, names...)
	if err != nil {
		return err
	}
	// Announce every new or changed topic at once, so that a session's
	// start costs one round trip whatever the number of topics. A topic
	// with committed progress at the destination (a position in the
	// Resume) was prepared there before: its partitions are consumed at
	// once and the receiver holds their batches until the announcement is
	// through. A new topic is consumed only once its destination is ready.
	type announcement struct {
		t     *transport.Topic
		ready <-chan string
		had   int32 // partitions consumed before
	}
	var pending []announcement
	var errs []error
	for _, name := range names {
		n := int32(len(td[name].Partitions))
		cfg := configs[name]
		if n <= d.consumed[name] && maps.Equal(cfg, d.announced[name]) {
			continue
		}
		t := &transport.Topic{Leg: leg.ID, Name: name, Partitions: n, Configs: cfg}
		ready, err := d.announce(ctx, t)
		if err != nil {
			return err // the session is gone
		}
		a := announcement{t: t, ready: ready, had: d.consumed[name]}
		if d.known(name) {
			d.consume(name, n)
		}
		pending = append(pending, a)
	}
	for _, a := range pending {
		name, n := a.t.Name, a.t.Partitions
		if err := d.await(ctx, a.t, a.ready); err != nil {
			errs = append(errs, err)
			continue
		}
		if d.announced == nil {
			d.announced = map[string]map[string]string{}
		}
		if n <= a.had {
			d.lr.p.log.Info("source topic configs changed", "leg", leg.ID, "topic", name, "configs", a.t.Configs)
		}
		d.announced[name] = a.t.Configs
		d.consume(name, n)
	}
	return errors.Join(errs...)
}

// known reports whether the destination has committed progress for topic:
// the receiver prepared its destination before.
func (d *discoverer) known(topic string) bool {
	if d.progressed == nil {
		d.progressed = map[string]bool{}
		for k := range d.positions {
			d.progressed[k.Topic] = true
		}
	}
	return d.progressed[topic]
}

// consume adds the partitions of topic below n that are not consumed yet,
// from their resume positions.
func (d *discoverer) consume(name string, n int32) {
	if n <= d.consumed[name] {
		return
	}
	for p := d.consumed[name]; p < n; p++ {
		if d.owns != nil && !d.owns[tp{Topic: name, Partition: p}] {
			continue
		}
		at := int64(-1)
		if o, ok := d.positions[tp{Topic: name, Partition: p}]; ok {
			at = o
		}
		d.srcs[d.next%len(d.srcs)].add(name, p, at)
		d.next++
	}
	d.lr.p.log.Info("mirroring topic", "leg", d.lr.out.leg.ID, "topic", name, "dest", d.lr.out.leg.DestTopic(name), "partitions", n)
	d.consumed[name] = n
}

// topicConfigs returns the non-default, non-sensitive configs of topics.
func (d *discoverer) topicConfigs(ctx context.Context, topics ...string) (map[string]map[string]string, error) {
	rcs, err := d.adm.DescribeTopicConfigs(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("describe source topic configs: %w", err)
	}
	out := map[string]map[string]string{}
	for _, rc := range rcs {
		if rc.Err != nil {
			return nil, fmt.Errorf("describe source topic %s configs: %w", rc.Name, rc.Err)
		}
		m := map[string]string{}
		for _, c := range rc.Configs {
			if c.Source == kmsg.ConfigSourceDynamicTopicConfig && !c.Sensitive && c.Value != nil {
				m[c.Key] = *c.Value
			}
		}
		out[rc.Name] = m
	}
	return out, nil
}

// announce sends a Topic frame; the receiver's TopicReady comes on the
// channel returned.
func (d *discoverer) announce(ctx context.Context, t *transport.Topic) (<-chan string, error) {
	ch := make(chan string, 1)
	d.lr.mu.Lock()
	d.lr.ready[t.Name] = ch
	d.lr.mu.Unlock()
	if err := d.lr.conn.Send(ctx, t); err != nil {
		return nil, fmt.Errorf("announce topic %s: %w", t.Name, err)
	}
	return ch, nil
}

// await waits for the receiver's answer to the announcement of t.
func (d *discoverer) await(ctx context.Context, t *transport.Topic, ready <-chan string) error {
	tctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	select {
	case <-tctx.Done():
		return fmt.Errorf("announce topic %s: no answer from receiver: %w", t.Name, tctx.Err())
	case e := <-ready:
		if e != "" {
			return fmt.Errorf("destination topic for %s: %s", t.Name, e)
		}
		return nil
	}
}
