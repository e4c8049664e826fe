package lab_test

import (
	"testing"

	"github.com/meridian-gw/meridian/chaos/lab"
	"github.com/meridian-gw/meridian/internal/kafkatest"
)

// The end-to-end scenarios against real Apache Kafka (internal/kafkatest):
// two single-node KRaft clusters as edge and hq, the gateways between them
// over QUIC. Each runs in record mode and in passthrough mode. They skip
// without Java and the jars, except under CI=true, where they fail.

// realKafka starts the edge and hq clusters and returns lab options that
// use them (o's other fields kept).
func realKafka(t *testing.T, o lab.Options, kopts kafkatest.Options) (lab.Options, *kafkatest.Cluster, *kafkatest.Cluster) {
	t.Helper()
	if testing.Short() {
		t.Skip("real Apache Kafka")
	}
	cs := kafkatest.Start(t, 2, kopts)
	o.EdgeBootstrap, o.HQBootstrap = cs[0].Bootstrap(), cs[1].Bootstrap()
	return o, cs[0], cs[1]
}

// bothModes runs f as subtests "records" and "passthrough".
func bothModes(t *testing.T, f func(t *testing.T, passthrough bool)) {
	for _, pass := range []bool{false, true} {
		t.Run(modeName(pass), func(t *testing.T) { f(t, pass) })
	}
}

// TestRealKafkaMirror200kLossyLink: 200,000 records over QUIC through the
// impairment proxy (wan: 80 ms RTT, here with 1% random loss), read back
// exact from the real destination broker.
func TestRealKafkaMirror200kLossyLink(t *testing.T) {
	bothModes(t, func(t *testing.T, pass bool) {
		o, _, _ := realKafka(t, lab.Options{Profile: "wan", Loss: 0.01, Passthrough: pass}, kafkatest.Options{})
		testMirror200k(t, o)
	})
}

// TestRealKafkaRestartsAndBlackout: 200,000 records while the receiving
// gateway is stopped and restarted twice and the link blacks out for 5 s,
// against real brokers.
func TestRealKafkaRestartsAndBlackout(t *testing.T) {
	bothModes(t, func(t *testing.T, pass bool) {
		o, _, _ := realKafka(t, lab.Options{Profile: "lan", Window: 1 << 20, Passthrough: pass}, kafkatest.Options{})
		testRestartsAndBlackout(t, o, 200_000)
	})
}

// startGateways starts the receiving gateway, then the sending one.
func startGateways(t *testing.T, l *lab.Lab) {
	t.Helper()
	for _, g := range []string{lab.HQGateway, lab.EdgeGateway} {
		if err := l.Start(g); err != nil {
			t.Fatal(err)
		}
	}
}
