package mirror

import (
	"fmt"
	"maps"
	"math"
	"strconv"
	"strings"

	"github.com/meridian-gw/meridian/transport"
)

// What a sender may ask of a destination topic. A Topic frame comes from a
// peer gateway, which may hold a stolen certificate: the receiver takes
// from it only what the leg's route allows (checkTopic), and never lets it
// lower the retention of data already at the destination (followConfigs).

// senderTopicConfigs are the topic configs a sender may set at the
// destination; others in a Topic frame are dropped, counted and logged.
var senderTopicConfigs = map[string]bool{
	"cleanup.policy":            true,
	"compression.type":          true,
	"retention.ms":              true,
	"retention.bytes":           true,
	"delete.retention.ms":       true,
	"min.compaction.lag.ms":     true,
	"max.compaction.lag.ms":     true,
	"max.message.bytes":         true,
	"segment.bytes":             true,
	"segment.ms":                true,
	"min.cleanable.dirty.ratio": true,
}

// retentionConfigs may only be raised at an existing destination topic.
var retentionConfigs = map[string]bool{"retention.ms": true, "retention.bytes": true}

// topicRefusal is a Topic frame the receiver will not prepare.
type topicRefusal struct {
	reason string // metric label
	msg    string
}

func (r *topicRefusal) Error() string { return r.msg }

// checkTopic checks a Topic frame against the leg's route: the source
// topic must match the route's filters, its destination name (the route's
// rename of it) must be a valid Kafka topic name that is neither internal
// ("__" prefix: the progress topic, __consumer_offsets,
// __transaction_state) nor the dead-letter topic, and the partition count
// must be within the route's max_partitions. It returns the destination
// name and the frame with only the configs a sender may set; a refusal is
// a *topicRefusal, counted in meridian_topic_refusals_total.
func (l *inLeg) checkTopic(t *transport.Topic) (string, *transport.Topic, error) {
	refuse := func(reason, format string, args ...any) (string, *transport.Topic, error) {
		l.e.m.topicRefused.WithLabelValues(l.leg.ID, reason).Inc()
		return "", nil, &topicRefusal{reason: reason, msg: "refused: " + fmt.Sprintf(format, args...)}
	}
	if !l.leg.Match(t.Name) {
		return refuse("filter", "source topic %q is not one the route %s mirrors", t.Name, l.leg.Route.Name)
	}
	dest := l.leg.DestTopic(t.Name)
	switch {
	case strings.HasPrefix(dest, "__"):
		return refuse("internal", "destination topic %q is internal", dest)
	case dest == DeadLetterTopic:
		return refuse("dead_letter", "destination topic %q is the dead-letter topic", dest)
	}
	if why := kafkaNameProblem(dest); why != "" {
		return refuse("invalid_name", "destination topic %q: %s", dest, why)
	}
	if max := l.leg.MaxPartitions(); t.Partitions < 1 || t.Partitions > max {
		return refuse("partitions", "topic %q with %d partitions: route %s allows 1 to %d (routes[].max_partitions)",
			t.Name, t.Partitions, l.leg.Route.Name, max)
	}
	out := *t
	out.Configs = maps.Clone(t.Configs)
	for k := range t.Configs {
		if !senderTopicConfigs[k] {
			delete(out.Configs, k)
			l.e.m.topicRefused.WithLabelValues(l.leg.ID, "config_not_allowed").Inc()
			l.log.Warn("dropped a topic config a sender may not set", "leg", l.leg.ID, "topic", dest, "config", k)
		}
	}
	return dest, &out, nil
}

// kafkaNameProblem says why name is not a valid Kafka topic name, or "".
func kafkaNameProblem(name string) string {
	switch {
	case name == "" || name == "." || name == "..":
		return "not a topic name"
	case len(name) > 249:
		return "longer than 249 characters"
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Sprintf("character %q is not allowed (only ASCII letters, digits, '.', '_' and '-')", c)
		}
	}
	return ""
}

// lowersRetention reports whether setting a retention config from cur to
// next would keep less data. -1 (unlimited) is the most; a value that is
// not a number lowers (it is refused rather than guessed at), and an
// unknown current value counts as unlimited.
func lowersRetention(cur, next string, curKnown bool) bool {
	rank := func(s string) (int64, bool) {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, false
		}
		if n < 0 {
			return math.MaxInt64, true
		}
		return n, true
	}
	nv, ok := rank(next)
	if !ok {
		return true
	}
	if !curKnown {
		return nv != math.MaxInt64
	}
	cv, ok := rank(cur)
	return ok && nv < cv
}
