package mirror

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/meridian-gw/meridian/transport"
)

// prepareTopic creates or checks the destination topic of a source topic:
// same partition count (or more) and the source's non-default configs,
// within what the route lets a sender ask (checkTopic).
func (l *inLeg) prepareTopic(ctx context.Context, t *transport.Topic) error {
	if external(l.leg) {
		return l.prepareExternal(t)
	}
	dest, t, err := l.checkTopic(t)
	if err != nil {
		return err
	}
	adm, err := l.admin()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, name := range []string{DeadLetterTopic, dest} {
		parts, configs := int32(1), map[string]*string(nil)
		if name == dest {
			parts = t.Partitions
			configs = map[string]*string{}
			for k, v := range t.Configs {
				configs[k] = &v
			}
		}
		if err := l.ensureTopic(ctx, adm, name, parts, configs); err != nil {
			return err
		}
	}
	dt := &destTopic{name: dest, partitions: t.Partitions, maxBytes: 1048588}
	current, err := topicConfigs(ctx, adm, dt)
	if err != nil {
		return err
	}
	if err := l.followConfigs(ctx, adm, t, dt, current); err != nil {
		return err
	}
	l.state.prepared(t.Name, dt, t.Configs)
	return nil
}

// ensureTopic creates topic name with parts partitions and configs, or
// grows it to parts partitions.
func (l *inLeg) ensureTopic(ctx context.Context, adm *kadm.Client, name string, parts int32, configs map[string]*string) error {
	td, err := adm.ListTopics(ctx, name)
	if err != nil {
		return fmt.Errorf("describe %s: %w", name, err)
	}
	d, ok := td[name]
	switch {
	case !ok || d.Err != nil:
		resp, err := adm.CreateTopic(ctx, parts, -1, configs, name)
		if err == nil {
			err = resp.Err
		}
		if isExists(err) {
			return nil // created meanwhile by someone else (another leg, say)
		}
		if err != nil {
			return fmt.Errorf("create %s with %d partitions: %w", name, parts, err)
		}
		l.log.Info("created destination topic", "leg", l.leg.ID, "topic", name, "partitions", parts)
	case int32(len(d.Partitions)) < parts:
		if _, err := adm.UpdatePartitions(ctx, int(parts), name); err != nil {
			return fmt.Errorf("grow %s to %d partitions: %w", name, parts, err)
		}
		l.log.Info("grew destination topic", "leg", l.leg.ID, "topic", name, "partitions", parts)
	}
	return nil
}

// destConfigs are a destination topic's configs as topicConfigs read them.
type destConfigs struct {
	overrides map[string]string // set on the topic itself
	// retention holds the effective retention configs, and fallback what
	// each would be once the topic's own override is removed (absent when
	// the broker did not say).
	retention, fallback map[string]string
}

// topicConfigs reads dt's configs: it sets dt.maxBytes and returns the
// overrides set on the topic itself and its retention.
func topicConfigs(ctx context.Context, adm *kadm.Client, dt *destTopic) (*destConfigs, error) {
	rcs, err := adm.DescribeTopicConfigs(ctx, dt.name)
	if err != nil {
		return nil, fmt.Errorf("describe %s configs: %w", dt.name, err)
	}
	rc, err := rcs.On(dt.name, nil)
	if err != nil {
		return nil, fmt.Errorf("describe %s configs: %w", dt.name, err)
	}
	current := &destConfigs{overrides: map[string]string{}, retention: map[string]string{}, fallback: map[string]string{}}
	for _, kv := range rc.Configs {
		if kv.Value == nil {
			continue
		}
		if retentionConfigs[kv.Key] {
			current.retention[kv.Key] = *kv.Value
			for _, syn := range kv.Synonyms {
				if syn.Source != kmsg.ConfigSourceDynamicTopicConfig && syn.Value != nil {
					current.fallback[kv.Key] = synonymValue(syn.Key, *syn.Value)
					break
				}
			}
		}
		if kv.Key == "max.message.bytes" {
			if n, err := strconv.Atoi(*kv.Value); err == nil {
				dt.maxBytes = n
			}
		}
		if kv.Source == kmsg.ConfigSourceDynamicTopicConfig {
			current.overrides[kv.Key] = *kv.Value
		}
	}
	if _, ok := current.fallback["retention.ms"]; !ok {
		// Apache Kafka lists no synonym for retention.ms when the broker
		// sets none of log.retention.{ms,minutes,hours} (a set one is
		// listed): the fallback is then the built-in 168 hours.
		current.fallback["retention.ms"] = kafkaDefaultRetentionMs
	}
	return current, nil
}

// followConfigs makes dt's configs follow the source's: it sets what
// differs, and removes what the source itself stopped overriding (an
// override set only at the destination is left alone). It never lowers the
// retention of the destination's data: a change (or removal) that would is
// skipped, counted and logged.
func (l *inLeg) followConfigs(ctx context.Context, adm *kadm.Client, t *transport.Topic, dt *destTopic, current *destConfigs) error {
	prev := l.state.announcedConfigs(t.Name)
	lowers := func(k, next string, known bool) bool {
		if !retentionConfigs[k] {
			return false
		}
		cur, curKnown := current.retention[k]
		if !known || lowersRetention(cur, next, curKnown) {
			l.e.m.topicRefused.WithLabelValues(l.leg.ID, "retention_lowered").Inc()
			l.log.Warn("refused to lower a destination topic's retention", "leg", l.leg.ID, "topic", dt.name,
				"config", k, "current", cur, "asked", next)
			return true
		}
		return false
	}
	var alters []kadm.AlterConfig
	for k, v := range t.Configs {
		if cur, ok := current.overrides[k]; (!ok || cur != v) && !lowers(k, v, true) {
			alters = append(alters, kadm.AlterConfig{Op: kadm.SetConfig, Name: k, Value: &v})
		}
	}
	for k := range prev {
		if _, still := t.Configs[k]; !still {
			if _, set := current.overrides[k]; set {
				fb, known := current.fallback[k]
				if !lowers(k, fb, known) {
					alters = append(alters, kadm.AlterConfig{Op: kadm.DeleteConfig, Name: k})
				}
			}
		}
	}
	if len(alters) == 0 {
		return nil
	}
	resp, err := adm.AlterTopicConfigs(ctx, alters, dt.name)
	if err == nil {
		_, err = resp.On(dt.name, nil)
		if err == nil {
			for _, r := range resp {
				err = errors.Join(err, r.Err)
			}
		}
	}
	if err != nil {
		return fmt.Errorf("apply source configs to %s: %w", dt.name, err)
	}
	for _, a := range alters {
		if a.Name == "max.message.bytes" && a.Value != nil {
			if n, err := strconv.Atoi(*a.Value); err == nil {
				dt.maxBytes = n
			}
		}
	}
	l.log.Info("destination topic configs follow the source", "leg", l.leg.ID, "topic", dt.name, "changes", len(alters))
	return nil
}

// admin returns the leg's destination admin client, creating it once.
func (l *inLeg) admin() (*kadm.Client, error) {
	l.admMu.Lock()
	defer l.admMu.Unlock()
	if l.adm != nil {
		return l.adm, nil
	}
	opts, err := l.e.opts.ClusterOpts(l.leg.To)
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(append(opts, kgo.MetadataMinAge(250*time.Millisecond))...)
	if err != nil {
		return nil, err
	}
	l.adm = kadm.NewClient(cl)
	return l.adm, nil
}

func (l *inLeg) closeAdmin() {
	l.admMu.Lock()
	defer l.admMu.Unlock()
	if l.adm != nil {
		l.adm.Close()
		l.adm = nil
	}
}

func isExists(err error) bool { return errors.Is(err, kerr.TopicAlreadyExists) }

// kafkaDefaultRetentionMs is Apache Kafka's built-in log.retention.hours
// (168) in milliseconds.
const kafkaDefaultRetentionMs = "604800000"

// synonymValue is a broker-level synonym's value in the unit of the topic
// config it stands for: Kafka answers retention.ms's fallback as
// log.retention.hours=168 when only the hours are set, which read as
// milliseconds would look like a retention of 168 ms.
func synonymValue(name, v string) string {
	unit := map[string]int64{"log.retention.hours": 3_600_000, "log.retention.minutes": 60_000}[name]
	if unit == 0 {
		return v
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return v // not a number: lowersRetention refuses it; negative: unlimited
	}
	return strconv.FormatInt(n*unit, 10)
}
