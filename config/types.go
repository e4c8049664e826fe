package config

import "time"

// File is topology file version 1, exactly as written (after ${ENV}
// expansion and defaults). Field docs say what zero means.
type File struct {
	Version  int       `yaml:"version"` // must be 1
	Gossip   *Gossip   `yaml:"gossip"`  // nil: no gossip (single-link setups)
	Regions  []Region  `yaml:"regions"`
	Links    []Link    `yaml:"links"`
	Routes   []Route   `yaml:"routes"`
	Defaults *Defaults `yaml:"defaults"`
	// TLS is what every gateway checks in its peers' link certificates
	// (nil: the SAN when present, nothing revoked).
	TLS *LinkTLS `yaml:"tls"`
	// Metadata holds free-form labels for people and tools reading the
	// file (owner, ticket, cost centre). Gateways never read it.
	Metadata map[string]string `yaml:"metadata"`

	// src is where the file came from (Parse and Load set it; nil for a
	// File built in code): ErrorAt and Warnings use it.
	src *source
}

// source is what Parse keeps about a file beyond its values.
type source struct {
	name     string
	pos      map[string]pos // path → where it is written (see decoder.pos)
	warnings Errors
	secrets  []string // values that came from ${ENV}
}

// Gossip configures memberlist between gateways (package
// topology/membership). Gateways that set gateways[].gossip are members.
type Gossip struct {
	// Keys are base64 AES keys (16, 24 or 32 bytes) for the AES-GCM
	// keyring of gossip on plain UDP/TCP (gateways[].gossip.region); the
	// first encrypts. Write them as ${ENV}. Rotate them at run time with
	// `meridian gossip keys`.
	Keys []Secret `yaml:"keys"`
}

// GatewayGossip is a gateway's part in gossip. In the file it is either
// the QUIC gossip address alone ("gossip: 10.0.0.5:7101") or a mapping.
type GatewayGossip struct {
	// Listen is the UDP host:port of fleet-wide gossip over QUIC with the
	// link certificates (mutual TLS), required.
	Listen string `yaml:"listen"`
	// Advertise is the address peers dial ("" = Listen).
	Advertise string `yaml:"advertise"`
	// DialOut marks a gateway behind NAT that nothing can dial: peers
	// reach it over the connections it opens.
	DialOut bool `yaml:"dial_out"`
	// Region is the host:port (UDP and TCP) of gossip among the gateways
	// of this region on plain sockets, encrypted with gossip.keys; ""
	// = none.
	Region string `yaml:"region"`
}

func (*GatewayGossip) shorthand() string { return "listen" }

// LinkTLS is the fleet's link certificate policy.
type LinkTLS struct {
	// RequireSAN refuses peer certificates without the URI SAN
	// meridian://gateway/NAME that `meridian certs` writes.
	RequireSAN bool `yaml:"require_san"`
	// RevokedSerials are serial numbers refused on every link, in hex as
	// openssl prints them (colons optional).
	RevokedSerials []string `yaml:"revoked_serials"`
	// CRL is a certificate revocation list signed by the fleet CA (PEM or
	// DER; relative to the file's directory). "" = none.
	CRL string `yaml:"crl"`
}

// Defaults apply to every link and route that does not say otherwise.
type Defaults struct {
	Compression string `yaml:"compression"` // none|zstd|s2; "" = zstd
	Profile     string `yaml:"profile"`     // link profile name; "" = wan
}

// Region is one site: a data centre, a cloud region, a ship.
type Region struct {
	Name     string    `yaml:"name"`
	Clusters []Cluster `yaml:"clusters"`
	Gateways []Gateway `yaml:"gateways"`
}

// Cluster is one message cluster in a region, referred to as "region/cluster":
// a Kafka cluster (kind kafka: bootstrap, tls, sasl) or an AMQP 1.0 broker
// (kind amqp: the amqp block), either of which a route may read or write.
type Cluster struct {
	Name      string   `yaml:"name"`
	Kind      string   `yaml:"kind"`      // "kafka" or "amqp"
	Bootstrap []string `yaml:"bootstrap"` // kafka: host:port, at least one
	TLS       *TLS     `yaml:"tls"`       // kafka: nil = plaintext
	SASL      *SASL    `yaml:"sasl"`      // kafka: nil = no authentication
	// AMQP is the broker of a cluster of kind amqp, required for it and
	// refused for kafka (docs/amqp-endpoints.md).
	AMQP *AMQPCluster `yaml:"amqp"`
}

// AMQPCluster is an AMQP 1.0 broker used as a route's source or sink. Its
// addresses stand for topics: a route from it includes them by name (the
// route's topics.include patterns match the names), a route to it writes
// the address its rename makes, which must be one of them. Messages map to
// Kafka records by the CloudEvents bindings (package mirror/cloudevents).
type AMQPCluster struct {
	// URL is amqp://host[:port] or amqps://host[:port] (TLS), required.
	// Credentials go in sasl, never in the URL.
	URL string `yaml:"url"`
	// SASL authenticates to the broker: mechanism plain (username and
	// password, the password as ${ENV}), anonymous or external (the TLS
	// client certificate). nil: none.
	SASL *SASL `yaml:"sasl"`
	// TLS configures amqps (ca_file, cert_file and key_file for a client
	// certificate, server_name). nil: the system roots.
	TLS *TLS `yaml:"tls"`
	// AddressPrefix is put before every name of Addresses and DeadLetter
	// to make the broker's address; "" = "/queue/" (RabbitMQ queues).
	AddressPrefix string `yaml:"address_prefix"`
	// Addresses are the names of the broker's addresses that routes may
	// read or write, at least one: each a valid Kafka topic name
	// (letters, digits, ".", "_", "-"), which is what a route's include
	// patterns match and what {topic} is in its rename.
	Addresses []string `yaml:"addresses"`
	// KeyProperty is the application property the Kafka key comes from
	// and goes to; names starting with cloudEvents_ or cloudEvents: are
	// CloudEvents attributes (found in either mode). "" =
	// cloudEvents_partitionkey.
	KeyProperty string `yaml:"key_property"`
	// KeyRequired makes a message without the key property a poison
	// message; false gives it a null key.
	KeyRequired bool `yaml:"key_required"`
	// Mode is the CloudEvents content mode written: binary or
	// structured; "" = binary. Either mode is read.
	Mode string `yaml:"mode"`
	// DeadLetter is the name (under AddressPrefix) of the address poison
	// messages go to, with the reason in their application properties;
	// "" = none: a poison message is rejected with the reason in the AMQP
	// error.
	DeadLetter string `yaml:"dead_letter"`
	// MaxMessageBytes is the largest message read or written (body and
	// properties), written e.g. "1MiB"; larger ones are poison. 0 = 1 MiB.
	MaxMessageBytes ByteSize `yaml:"max_message_bytes"`
}

// TLS is a client or server TLS setting. Files are PEM.
type TLS struct {
	Enabled            *bool  `yaml:"enabled"` // nil: true when the block is present
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	ServerName         string `yaml:"server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// SASL is Kafka SASL authentication.
type SASL struct {
	Mechanism string `yaml:"mechanism"` // plain|scram-sha-256|scram-sha-512
	Username  string `yaml:"username"`
	Password  Secret `yaml:"password"` // use ${ENV}; "$${" is a literal "${"
}

// Gateway is one meridian process in a region.
type Gateway struct {
	Name      string `yaml:"name"`      // unique across the file
	Listen    string `yaml:"listen"`    // link listen address host:port (UDP for quic)
	Advertise string `yaml:"advertise"` // address peers dial; "" = Listen
	Admin     *Admin `yaml:"admin"`     // admin HTTP API; nil = no admin server
	// Gossip makes the gateway a member of the fleet's gossip; nil = not.
	Gossip *GatewayGossip `yaml:"gossip"`
	// StateDir is a directory of the gateway's own, on local disk: it
	// keeps what the sources of amqp clusters need to de-duplicate
	// redeliveries after a restart, and the progress of routes into amqp
	// clusters, for which it is required (docs/amqp-endpoints.md). "" =
	// none: the sources' state lives in memory, and messages the broker
	// redelivers after a restart of this gateway may be written twice.
	StateDir string `yaml:"state_dir"`
	// TLS is link mTLS: ca_file (the fleet CA), cert_file and key_file,
	// required for quic links. The certificate must name the gateway
	// (`meridian certs` makes such). server_name and
	// insecure_skip_verify are rejected: a peer is always verified
	// against the fleet CA under its gateway name.
	TLS *TLS `yaml:"tls"`
}

// Admin is a gateway's admin HTTP API (/healthz, /metrics, /status and
// the mutating POST /v1/failover and /v1/failback). In the file it is either the listen
// address alone ("admin: 127.0.0.1:9180") or a mapping.
//
// Without token or mTLS every read is open and the mutating endpoints
// answer only clients on loopback (403 otherwise). With either, every
// request must authenticate except reads of the endpoints in Open.
type Admin struct {
	Listen string `yaml:"listen"` // host:port, required
	// Token is a bearer token (Authorization: Bearer ...), at least 16
	// characters, written as ${ENV} (a literal token is an error).
	// "" = none.
	Token Secret `yaml:"token"`
	// MTLS serves HTTPS with the gateway's link certificate (tls:) and
	// verifies client certificates against the fleet CA: an operator
	// certificate (`meridian certs --operator NAME`) may do everything, a
	// gateway's certificate only read.
	MTLS bool `yaml:"mtls"`
	// Open lists the endpoints readable without authentication when Token
	// or MTLS is set: healthz, metrics, status, ui (the status page, which
	// reads /status, so ui needs status). nil = healthz and metrics
	// (Prometheus habits); an empty list = none. Mutating endpoints are
	// never open.
	Open []string `yaml:"open"`
	// Hosts are Host header names accepted besides loopback names and the
	// listen address's own host (a defence against DNS rebinding): the
	// names operators reach the gateway by.
	Hosts []string `yaml:"hosts"`
}

// AdminReads are the endpoints Admin.Open may name.
var AdminReads = []string{"healthz", "metrics", "status", "members", "ui"}

// AdminTokenMin is the shortest admin token accepted.
const AdminTokenMin = 16

// shorthand is the field a scalar written in place of the whole mapping
// sets ("admin: 127.0.0.1:9180" sets admin.listen).
func (*Admin) shorthand() string { return "listen" }

// Link joins two regions (or two gateways, "region/gateway"). An end
// written "region/gateway" pins the link to that gateway: only it carries
// the link in its region (package routing has the rule).
type Link struct {
	Name      string   `yaml:"name"`      // "" = "<a>--<b>" from Between, "/" in a ref becoming "."
	Between   []string `yaml:"between"`   // exactly two distinct regions or region/gateway refs
	Transport string   `yaml:"transport"` // "quic" (default) or "amqp"
	// AMQP is the broker an amqp link travels through; required when
	// transport is "amqp", refused otherwise.
	AMQP        *AMQP   `yaml:"amqp"`
	Profile     string  `yaml:"profile"`     // named link profile; "" = defaults.profile
	Compression string  `yaml:"compression"` // none|zstd|s2; "" = defaults.compression
	RateLimit   BitRate `yaml:"rate_limit"`  // written e.g. "10Mbit", parsed when decoded; 0 = unlimited
	// Window is the credit window the receiving gateway grants the link's
	// sessions (unacknowledged raw bytes in flight), written e.g. "64MiB",
	// parsed when decoded; 0 = the gateway's window (64 MiB).
	Window ByteSize `yaml:"window"`
	// Passthrough forwards the source's Kafka record batches byte for byte
	// instead of decoding and re-encoding their records: far less CPU per
	// record, for links where CPU rather than bandwidth is the limit.
	// Compression then applies only to batches the producers left
	// uncompressed.
	Passthrough bool `yaml:"passthrough"`
	// Dial names the region (one of Between's) whose gateway opens the
	// link's sessions; one session carries the legs of both directions,
	// so a site behind NAT dials out and still receives. "" = the default
	// rule (docs/links-and-routes.md): the side that is not the hub.
	// Refused on amqp links, where both sides connect to the broker.
	Dial string `yaml:"dial"`
	// Cost weighs the link when a leg whose direct link is down relays
	// through another region: the cheapest healthy path wins, a path's
	// cost being the sum of its links' (docs/relays.md). 0 = the default
	// of the link's profile (lan 1, wan 10, mobile-lte 20, leo-satellite
	// 30, mobile-3g-flaky 60, geo-satellite 100).
	Cost int `yaml:"cost"`
	// HoldDown is how long a leg's direct link must have been healthy
	// before a leg that relays around it moves back, written e.g. "30s";
	// 0 = 30s.
	HoldDown time.Duration `yaml:"hold_down"`
}

// AMQP is the AMQP 1.0 broker that carries a link (transport: amqp).
// Each direction of the link uses two addresses: PREFIX+LINK.FROM.TO for
// the sending gateway's frames and the same with ".ctl" for the receiving
// gateway's answers (transport/amqp).
type AMQP struct {
	// URL is amqp://host[:port] or amqps://host[:port] (TLS), required.
	// Credentials go in sasl, never in the URL.
	URL string `yaml:"url"`
	// AddressPrefix starts every address of the link; "" =
	// "/queue/meridian." (RabbitMQ queues).
	AddressPrefix string `yaml:"address_prefix"`
	// SASL authenticates to the broker: mechanism plain (username and
	// password, the password as ${ENV}), anonymous or external (the TLS
	// client certificate). nil: none.
	SASL *SASL `yaml:"sasl"`
	// TLS configures amqps (ca_file, cert_file and key_file for a client
	// certificate, server_name). nil: the system roots.
	TLS *TLS `yaml:"tls"`
}

// Route mirrors topics from one cluster to one or more clusters.
type Route struct {
	Name   string      `yaml:"name"`
	From   string      `yaml:"from"` // "region/cluster"
	To     []string    `yaml:"to"`   // "region/cluster", at least one, none equal to From
	Topics TopicFilter `yaml:"topics"`
	// Rename is the destination topic name: a template of {topic},
	// {source_region}, {source_cluster} and the capture groups of the
	// include pattern that matched ({1}, {name}); "" = "{topic}".
	Rename   string        `yaml:"rename"`
	StartAt  string        `yaml:"start_at"` // earliest|latest; "" = earliest
	Priority int           `yaml:"priority"` // higher first; 0 default
	Discover time.Duration `yaml:"discover"` // topic discovery interval; 0 = 2s
	// Groups selects the source consumer groups whose committed offsets are
	// translated and committed at each destination (nil: none).
	Groups *GroupFilter `yaml:"groups"`
	// MaxPartitions caps the partition count a sender may ask a destination
	// topic of the route to have (0 = 1024, at most 65536).
	MaxPartitions int32 `yaml:"max_partitions"`
	// Filter is a CEL expression over each source record (key, headers,
	// timestamp, topic, partition, and value decoded as JSON): only
	// records for which it is true are sent; the others still advance the
	// route's progress. "" = every record. docs/filters.md has the
	// reference.
	Filter string `yaml:"filter"`
	// Merge allows the route to write destination topics that another
	// route writes too (fan-in into one topic): validation otherwise
	// rejects two routes whose renames can produce the same destination
	// topic at the same cluster. Both routes must say it.
	Merge bool `yaml:"merge"`
	// ShareTimeout is the session timeout of the consumer group through
	// which several gateways of the source region share the route's
	// partitions: a gateway silent this long (paused, cut off from the
	// source cluster) loses its partitions to the others. 0 = 10s; the
	// source brokers must allow it (group.min.session.timeout.ms, 6s by
	// default, to group.max.session.timeout.ms).
	ShareTimeout time.Duration `yaml:"share_timeout"`
}

// GroupFilter selects consumer groups by regular expression: a group is
// synced when it matches an include and no exclude.
type GroupFilter struct {
	Include []string `yaml:"include"` // at least one
	Exclude []string `yaml:"exclude"`
}

// TopicFilter selects source topics by regular expression (RE2, anchored
// by the user). A topic is routed when it matches an include and no exclude.
// Topics whose names start with "__" are never routed.
type TopicFilter struct {
	Include []string `yaml:"include"` // at least one
	Exclude []string `yaml:"exclude"`
}
