package config

import (
	"path/filepath"
	"testing"
)

// TestAMQPLink: an amqp link keeps its broker block, the password comes
// from ${ENV} (and is a secret), the prefix defaults, TLS paths are made
// relative to the file, and a gateway with only amqp links needs no
// listen address.
func TestAMQPLink(t *testing.T) {
	f := parseTestFile(t, "testdata/good/amqp.yaml")
	l := f.Links[0]
	if l.Transport != "amqp" || l.AMQP == nil {
		t.Fatalf("links[0] = %+v, want transport amqp with a broker", l)
	}
	a := l.AMQP
	if a.URL != "amqps://relay.plant.internal:5671" || a.AddressPrefix != "/queue/meridian." {
		t.Errorf("amqp = %+v", a)
	}
	if a.SASL == nil || a.SASL.Mechanism != "plain" || a.SASL.Username != "plant-a" || a.SASL.Password != "s3cret" {
		t.Errorf("amqp.sasl = %+v, want plain plant-a with the password from MERIDIAN_TEST_PASSWORD", a.SASL)
	}
	if f.Links[1].Transport != "quic" || f.Links[1].AMQP != nil {
		t.Errorf("links[1] = %+v, want quic without a broker", f.Links[1])
	}
	if f.Regions[0].Gateways[0].Listen != "" {
		t.Errorf("plant-a listen = %q, want none", f.Regions[0].Gateways[0].Listen)
	}

	// Without address_prefix the default applies.
	f.Links[0].AMQP.AddressPrefix = ""
	applyDefaults(f)
	if got := f.Links[0].AMQP.AddressPrefix; got != "/queue/meridian." {
		t.Errorf("default address_prefix = %q", got)
	}
	dir := t.TempDir()
	resolvePaths(f, dir)
	if got, want := f.Links[0].AMQP.TLS.CAFile, filepath.Join(dir, "relay-ca.crt"); got != want {
		t.Errorf("amqp tls ca_file = %q, want %q", got, want)
	}
}
