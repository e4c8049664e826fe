package config

import (
	"strings"
	"time"
)

// Defaults filled in by applyDefaults.
const (
	defaultTransport = "quic"
	// defaultAMQPAddressPrefix is transport/amqp's DefaultAddressPrefix
	// (config must not import transport).
	defaultAMQPAddressPrefix = "/queue/meridian."
	defaultCompression       = "zstd"
	defaultProfile           = "wan"
	defaultRename            = "{topic}"
	defaultStartAt           = "earliest"
	defaultDiscover          = 2 * time.Second
	defaultShareTimeout      = 10 * time.Second
	// The defaults of an amqp cluster; the key property and the size are
	// mirror/cloudevents' DefaultKeyProperty and DefaultMaxBytes.
	defaultAMQPClusterPrefix = "/queue/"
	defaultAMQPMode          = "binary"
	defaultAMQPKeyProperty   = "cloudEvents_partitionkey"
	defaultAMQPMessageBytes  = 1 << 20
	// DefaultMaxPartitions is routes[].max_partitions when not set;
	// MaxMaxPartitions is the most it may be set to.
	DefaultMaxPartitions = 1024
	MaxMaxPartitions     = 65536
)

// applyDefaults fills in every field whose zero value means "the default",
// so that later code never has to. It runs before validate and does not
// judge values: a bad defaults.profile is copied into links as is, and
// validate reports it once, at defaults.profile.
func applyDefaults(f *File) {
	compression, profile := defaultCompression, defaultProfile
	if f.Defaults != nil {
		if f.Defaults.Compression != "" {
			compression = f.Defaults.Compression
		}
		if f.Defaults.Profile != "" {
			profile = f.Defaults.Profile
		}
	}
	for i := range f.Links {
		l := &f.Links[i]
		if l.Transport == "" {
			l.Transport = defaultTransport
		}
		if l.Name == "" && len(l.Between) == 2 && l.Between[0] != "" && l.Between[1] != "" {
			l.Name = defaultLinkName(l.Between[0], l.Between[1])
		}
		if l.Compression == "" {
			l.Compression = compression
		}
		if l.AMQP != nil && l.AMQP.AddressPrefix == "" {
			l.AMQP.AddressPrefix = defaultAMQPAddressPrefix
		}
		if l.Profile == "" {
			l.Profile = profile
		}
	}
	for i := range f.Routes {
		r := &f.Routes[i]
		if r.Rename == "" {
			r.Rename = defaultRename
		}
		if r.StartAt == "" {
			r.StartAt = defaultStartAt
		}
		if r.Discover == 0 {
			r.Discover = defaultDiscover
		}
		if r.ShareTimeout == 0 {
			r.ShareTimeout = defaultShareTimeout
		}
		if r.MaxPartitions == 0 {
			r.MaxPartitions = DefaultMaxPartitions
		}
	}
	for i := range f.Regions {
		r := &f.Regions[i]
		for j := range r.Clusters {
			defaultTLS(r.Clusters[j].TLS)
			if a := r.Clusters[j].AMQP; a != nil {
				defaultAMQPCluster(a)
			}
		}
		for j := range r.Gateways {
			defaultTLS(r.Gateways[j].TLS)
		}
	}
}

// defaultLinkName is "<a>--<b>"; a "region/gateway" endpoint becomes
// "region.gateway" so the name stays a valid name.
func defaultLinkName(a, b string) string {
	return strings.ReplaceAll(a, "/", ".") + "--" + strings.ReplaceAll(b, "/", ".")
}

func defaultTLS(t *TLS) {
	if t != nil && t.Enabled == nil {
		t.Enabled = new(true)
	}
}

func defaultAMQPCluster(a *AMQPCluster) {
	if a.AddressPrefix == "" {
		a.AddressPrefix = defaultAMQPClusterPrefix
	}
	if a.Mode == "" {
		a.Mode = defaultAMQPMode
	}
	if a.KeyProperty == "" {
		a.KeyProperty = defaultAMQPKeyProperty
	}
	if a.MaxMessageBytes == 0 {
		a.MaxMessageBytes = defaultAMQPMessageBytes
	}
	defaultTLS(a.TLS)
}
