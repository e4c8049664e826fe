package mirror

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the engine's Prometheus series. Label "leg" is a leg ID
// ("route:region/cluster"); "dir" is "out" on the sending gateway and "in" on
// the receiving one.
type metrics struct {
	records      *prometheus.CounterVec // leg, dir
	rawBytes     *prometheus.CounterVec // leg, dir
	wireBytes    *prometheus.CounterVec // leg, dir
	lagRecords   *prometheus.GaugeVec   // leg
	lagSeconds   *prometheus.GaugeVec   // leg
	txns         *prometheus.CounterVec // leg, outcome
	hangingTxns  *prometheus.CounterVec // leg
	txnRetries   *prometheus.CounterVec // leg
	deadLetters  *prometheus.CounterVec // leg, reason
	resumes      *prometheus.CounterVec // leg
	dropped      *prometheus.CounterVec // leg, reason (batches dropped by the receiver)
	sourceGap    *prometheus.CounterVec // leg
	sourceOpens  *prometheus.CounterVec // leg (failed opens of a non-Kafka source)
	quarantined  *prometheus.GaugeVec   // leg, reason
	rtt          *prometheus.GaugeVec   // peer
	sessions     *prometheus.GaugeVec   // peer, role
	sessionFails *prometheus.CounterVec // peer, role
	groupCommits *prometheus.CounterVec // leg
	segments     *prometheus.CounterVec // leg, event (sealed, pruned)
	passBatches  *prometheus.CounterVec // leg, form (kafka, decoded)
	refused      *prometheus.CounterVec // peer, reason (sessions refused at Hello or before it)
	violations   *prometheus.CounterVec // peer, reason (sessions ended for a protocol violation)
	topicRefused *prometheus.CounterVec // leg, reason (Topic frames, or configs in them, the receiver refused)
	groupDropped *prometheus.CounterVec // leg, reason (group offsets the receiver did not take)
	fenced       *prometheus.GaugeVec   // leg (1 while failed over)

	filteredRecords *prometheus.CounterVec // leg, route
	filteredBytes   *prometheus.CounterVec // leg, route
	filterErrors    *prometheus.CounterVec // leg, route, reason (eval, not-json)

	loopDropped      *prometheus.CounterVec // leg, route, by (origin-header, producer-id)
	loopDroppedBytes *prometheus.CounterVec // leg, route
	originMalformed  *prometheus.CounterVec // leg, route

	// Shared legs (share.go, sender_share.go).
	claims        *prometheus.CounterVec // leg, result (took, released, refused): partitions, at the receiver
	sharePartsOut *prometheus.GaugeVec   // leg: partitions this sending gateway is assigned
	shareRebal    *prometheus.CounterVec // leg: assignment changes this sending gateway went through
	// receiverSwitches counts moves of a leg to another receiving
	// gateway of its destination region (standby.go).
	receiverSwitches *prometheus.CounterVec // leg, to

	relay *relayMetrics // relay.go
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_records_total", Help: "Records mirrored: sent (dir=out) or committed at the destination (dir=in).",
		}, []string{"leg", "dir"}),
		rawBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_raw_bytes_total", Help: "Uncompressed record bytes (key+value+headers) sent or committed.",
		}, []string{"leg", "dir"}),
		wireBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_wire_bytes_total", Help: "Encoded, compressed batch frame bytes sent or received on links.",
		}, []string{"leg", "dir"}),
		lagRecords: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meridian_lag_records", Help: "Source records not yet committed at the destination (sum over partitions, as of the last batch).",
		}, []string{"leg"}),
		lagSeconds: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meridian_lag_seconds", Help: "Age of the newest record committed at the destination while the leg is behind; 0 when caught up.",
		}, []string{"leg"}),
		txns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_transactions_total", Help: "Destination transactions by outcome (commit, abort).",
		}, []string{"leg", "outcome"}),
		hangingTxns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_hanging_transactions_committed_total", Help: "Transactions a destination broker left hanging (markers skipped while a partition had no leader) that a sink committed before loading its progress.",
		}, []string{"leg"}),
		txnRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_transaction_retries_total", Help: "Retries of an inbound leg after a failed destination transaction, each after a capped, jittered backoff.",
		}, []string{"leg"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_dead_letters_total", Help: "Records the destination will not accept, written to the dead-letter topic instead.",
		}, []string{"leg", "reason"}),
		resumes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_resumes_total", Help: "Resume frames sent to senders (session start or after a failed transaction).",
		}, []string{"leg"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_dropped_batches_total", Help: "Batches the receiver dropped, by reason; the sender resends them after a Resume.",
		}, []string{"leg", "reason"}),
		sourceOpens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_source_open_failures_total", Help: "Failed opens of a leg's source that is not Kafka (an AMQP broker down, or refusing an address): retried with backoff, the link session kept.",
		}, []string{"leg"}),
		sourceGap: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_source_gap_records_total", Help: "Source records that retention deleted before the mirror carried them (an out-of-range resume or a sender that fell behind retention): lost.",
		}, []string{"leg"}),
		quarantined: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meridian_quarantined_partitions", Help: "Source partitions of an inbound leg whose destination refuses them (topic-authorization, invalid-topic): not written, probed again with backoff.",
		}, []string{"leg", "reason"}),
		rtt: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meridian_link_rtt_seconds", Help: "Smoothed round-trip time of the session with a peer gateway.",
		}, []string{"peer"}),
		sessions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meridian_link_sessions", Help: "Open link sessions by peer and role (sender, receiver).",
		}, []string{"peer", "role"}),
		sessionFails: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_link_session_failures_total", Help: "Link sessions that failed or could not be opened.",
		}, []string{"peer", "role"}),
		groupCommits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_group_offset_commits_total", Help: "Translated consumer group offset commits at the destination.",
		}, []string{"leg"}),
		segments: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_offset_map_segments_total", Help: "Offset-map segments sealed into the progress topic, and pruned once retention deleted their destination records.",
		}, []string{"leg", "event"}),
		passBatches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_passthrough_batches_total",
			Help: "Source record batches a passthrough leg read: forwarded as they are (form=kafka) or decoded and sent as records (form=decoded: older formats, LogAppendTime, compaction gaps, a resume inside the batch).",
		}, []string{"leg", "form"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_link_sessions_refused_total",
			Help: "Link sessions the receiver refused before serving them, by peer and reason (forbidden leg, unknown gateway, revoked, limit, penalty).",
		}, []string{"peer", "reason"}),
		violations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_link_protocol_violations_total",
			Help: "Link sessions the receiver ended because the peer broke the protocol, by peer and reason (foreign leg, credit, malformed frame, ...).",
		}, []string{"peer", "reason"}),
		topicRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_topic_refusals_total",
			Help: "Topic announcements, or configs in them, the receiver refused, by leg and reason (filter, internal, dead_letter, invalid_name, partitions, config_not_allowed, retention_lowered, address).",
		}, []string{"leg", "reason"}),
		groupDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_group_offsets_dropped_total",
			Help: "Consumer group offsets the receiver did not take, by leg and reason (group or topic outside the route's filters, pending set full).",
		}, []string{"leg", "reason"}),
		fenced: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meridian_leg_fenced",
			Help: "1 while an inbound leg is fenced at its destination (failed over: its old direction writes nothing), else 0.",
		}, []string{"leg"}),
		filteredRecords: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_filtered_records_total",
			Help: "Source records a route's filter kept from the link (sending gateway), including those it could not be evaluated on; they still advance progress.",
		}, []string{"leg", "route"}),
		filteredBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_filtered_bytes_total",
			Help: "Uncompressed bytes (key+value+headers) of the records a route's filter kept from the link.",
		}, []string{"leg", "route"}),
		filterErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_filter_errors_total",
			Help: "Records a route's filter could not be evaluated on, by reason (not-json: the value is not JSON; eval: a missing header or field, a type mismatch); they do not match.",
		}, []string{"leg", "route", "reason"}),
		loopDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_loop_dropped_records_total",
			Help: "Source records the sending gateway kept from the link because the destination is already on their path, by how it knew (origin-header: the meridian.origin header; producer-id: written at the source by a Meridian sink of a leg from a cluster the destination reaches); they still advance progress.",
		}, []string{"leg", "route", "by"}),
		loopDroppedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_loop_dropped_bytes_total",
			Help: "Bytes of the records kept from the link as loops: key+value+headers of records, the whole size of Kafka batches skipped in passthrough.",
		}, []string{"leg", "route"}),
		originMalformed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_origin_malformed_total",
			Help: "Source records whose meridian.origin header was malformed: sent as produced at the source, the header replaced.",
		}, []string{"leg", "route"}),
		claims: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_share_claims_total",
			Help: "Source partitions of shared legs claimed by sending gateways, at the receiver, by result: took (the claimer changed), released, refused (claimed in an older consumer group generation than one accepted: a zombie).",
		}, []string{"leg", "result"}),
		receiverSwitches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_receiver_switches_total",
			Help: "Moves of a leg to another receiving gateway of its destination region (the one it went to did not answer, or gossip had it dead; or it came back), by the gateway moved to.",
		}, []string{"leg", "to"}),
		sharePartsOut: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meridian_share_partitions",
			Help: "Source partitions of a shared leg the consumer group assigns this sending gateway.",
		}, []string{"leg"}),
		shareRebal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_share_assignments_total",
			Help: "Changes of the partitions a shared leg's consumer group assigns this sending gateway (assigned, revoked or lost).",
		}, []string{"leg"}),
	}
	m.relay = newRelayMetrics(reg)
	if reg != nil {
		// An engine that replaces another on the same registry (a gateway's
		// reload) takes over its series, so counters keep counting.
		for _, c := range []**prometheus.CounterVec{&m.records, &m.rawBytes, &m.wireBytes, &m.txns, &m.hangingTxns, &m.txnRetries,
			&m.deadLetters, &m.resumes, &m.dropped, &m.sourceGap, &m.sourceOpens, &m.sessionFails, &m.groupCommits, &m.segments, &m.passBatches,
			&m.refused, &m.violations, &m.topicRefused, &m.groupDropped, &m.filteredRecords, &m.filteredBytes, &m.filterErrors,
			&m.loopDropped, &m.loopDroppedBytes, &m.originMalformed, &m.claims, &m.shareRebal, &m.receiverSwitches} {
			register(reg, c)
		}
		for _, g := range []**prometheus.GaugeVec{&m.lagRecords, &m.lagSeconds, &m.quarantined, &m.rtt, &m.sessions, &m.fenced, &m.sharePartsOut} {
			register(reg, g)
		}
	}
	return m
}

// register registers *c with reg, or, when reg already holds an equal
// collector (the engine this one replaces), makes *c that collector.
// Any other registration error is a programming error and panics, as
// MustRegister would.
func register[C prometheus.Collector](reg prometheus.Registerer, c *C) {
	err := reg.Register(*c)
	if err == nil {
		return
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			*c = existing
			return
		}
	}
	panic(err)
}

// inLegSeries creates an inbound leg's series at zero, so that /metrics
// shows them before the first event: an alert on a rise, or a dashboard
// panel, then has a series to read (a vector's children appear only once
// used).
func (m *metrics) inLegSeries(leg string) {
	m.fenced.WithLabelValues(leg).Set(0)
	m.txnRetries.WithLabelValues(leg)
	m.sourceGap.WithLabelValues(leg)
	m.hangingTxns.WithLabelValues(leg)
	for _, kind := range refusalKinds {
		m.deadLetters.WithLabelValues(leg, kind)
	}
	for _, kind := range quarantineKinds {
		m.quarantined.WithLabelValues(leg, kind)
	}
}

// peerSeries creates a peer's link series at zero (see inLegSeries).
func (m *metrics) peerSeries(peer, role string) {
	m.sessions.WithLabelValues(peer, role)
	m.sessionFails.WithLabelValues(peer, role)
}
