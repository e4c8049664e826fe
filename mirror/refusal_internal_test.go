package mirror

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/meridian-gw/meridian/config"
	"github.com/meridian-gw/meridian/routing"
	"github.com/meridian-gw/meridian/topology"
)

// TestRefusalNamesClusterAndPrincipal: a broker's authorization error on a
// leg's transaction says which cluster refused which principal, keeps the
// broker's error (errors.Is) and its resource; other errors are untouched.
func TestRefusalNamesClusterAndPrincipal(t *testing.T) {
	to := &topology.Cluster{Region: &topology.Region{Name: "hq"}, Name: "kafka", SASL: &config.SASL{Mechanism: "plain", Username: "meridian"}}
	l := &inLeg{leg: &routing.Leg{To: to}}
	denied := fmt.Errorf("produce to orders/0: %w", kerr.TopicAuthorizationFailed)
	err := l.refusal(denied)
	for _, want := range []string{"hq/kafka", "User:meridian", "orders/0"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not name %q", err, want)
		}
	}
	if !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Errorf("refusal %q lost the broker's error", err)
	}
	other := fmt.Errorf("flush: %w", kerr.NotLeaderForPartition)
	if got := l.refusal(other); got != other {
		t.Errorf("refusal(%q) = %q, want it unchanged", other, got)
	}
	if got := l.refusal(nil); got != nil {
		t.Errorf("refusal(nil) = %v", got)
	}
}
