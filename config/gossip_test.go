package config

import (
	"strings"
	"testing"
)

func gossipFile(gossip, gw string) string {
	return `version: 1
` + gossip + `
regions:
  - name: east
    clusters: [{name: kafka, kind: kafka, bootstrap: ["k:9092"]}]
    gateways:
      - name: east-a
        listen: 10.0.1.1:7443
        tls: {ca_file: ca.crt, cert_file: east-a.crt, key_file: east-a.key}
        ` + gw + `
`
}

func TestGatewayGossip(t *testing.T) {
	const key = "gossip: {keys: [MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=]}"
	for _, tc := range []struct {
		name, gossip, gw, want string
	}{
		{"shorthand", "", "gossip: 10.0.1.1:7101", ""},
		{"mapping with region gossip and keys", key, "gossip: {listen: 10.0.1.1:7101, region: 10.0.1.1:7102, dial_out: true}", ""},
		{"region gossip without keys", "", "gossip: {listen: 10.0.1.1:7101, region: 10.0.1.1:7102}", "gossip.region: gossip on a plain UDP/TCP port must be encrypted"},
		{"no listen", "", "gossip: {dial_out: true}", "gossip.listen: missing"},
		{"unspecified host", "", "gossip: 0.0.0.0:7101", "gossip.advertise: required"},
		{"bad port", "", "gossip: 10.0.1.1:0", "gossip.listen: invalid port"},
	} {
		f, err := Parse("t.yaml", []byte(gossipFile(tc.gossip, tc.gw)))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		case tc.want == "" && tc.name == "shorthand" && f.Regions[0].Gateways[0].Gossip.Listen != "10.0.1.1:7101":
			t.Errorf("shorthand: %+v", f.Regions[0].Gateways[0].Gossip)
		}
	}
}
