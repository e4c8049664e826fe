package lab_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/chaos/lab"
	"github.com/meridian-gw/meridian/config"
	"github.com/meridian-gw/meridian/internal/kafkatest"
	"github.com/meridian-gw/meridian/internal/verify"
)

// TestRealKafkaACLDeniedRoute: the hq broker runs the StandardAuthorizer and
// the gateway's principal may do everything except write the topic of one
// route ("orders"). That route stops, with the authorization error in the
// receiving gateway's status; the other route ("payments", "telemetry")
// flows exact meanwhile; once the deny ACL is removed the blocked route
// resumes and the whole mirror reads back exact.
func TestRealKafkaACLDeniedRoute(t *testing.T) {
	bothModes(t, func(t *testing.T, pass bool) {
		testDeniedRoute(t, pass, func(b *kadm.ACLBuilder) *kadm.ACLBuilder {
			return b.Topics("orders").Operations(kadm.OpWrite).ResourcePatternType(kadm.ACLPatternLiteral)
		}, "orders")
	})
}

// TestRealKafkaTransactionalIDDenied: the same with the route's
// transactional IDs denied (a prefixed ACL on "meridian-orders:", the
// route's leg): its sinks cannot start, the status names the cluster, the
// principal and the transactional ID, and the other route flows. Records
// mode only: a sink's start is the same code in both modes.
func TestRealKafkaTransactionalIDDenied(t *testing.T) {
	t.Run(modeName(false), func(t *testing.T) {
		testDeniedRoute(t, false, func(b *kadm.ACLBuilder) *kadm.ACLBuilder {
			return b.TransactionalIDs("meridian-orders:").Operations(kadm.OpWrite).ResourcePatternType(kadm.ACLPatternPrefixed)
		}, `"meridian-orders:hq/kafka#`)
	})
}

// testDeniedRoute runs two routes to an hq broker with the authorizer on,
// its principal allowed everything but what denied adds to a deny builder:
// route orders must stop with an error in the hq status that names the
// cluster, the principal and resource, route rest must flow exact, and
// both must read back exact once the deny ACL is deleted.
func testDeniedRoute(t *testing.T, pass bool, denied func(*kadm.ACLBuilder) *kadm.ACLBuilder, resource string) {
	const user = "meridian"
	routes := []config.Route{
		{Name: "orders", From: "edge/kafka", To: []string{"hq/kafka"}, Topics: config.TopicFilter{Include: []string{"^orders$"}}, StartAt: "earliest", Discover: time.Second},
		{Name: "rest", From: "edge/kafka", To: []string{"hq/kafka"}, Topics: config.TopicFilter{Include: []string{"^payments$", "^telemetry$"}}, StartAt: "earliest", Discover: time.Second},
	}
	o, edge, hq := realKafka(t, lab.Options{Passthrough: pass, Routes: routes},
		kafkatest.Options{Users: map[string]string{user: "meridian-secret"}, Authorizer: true})
	o.EdgeSASL = &config.SASL{Mechanism: "plain", Username: kafkatest.AdminUser, Password: config.Secret(edge.Password(kafkatest.AdminUser))}
	o.HQSASL = &config.SASL{Mechanism: "plain", Username: user, Password: config.Secret(hq.Password(user))}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	principal := "User:" + user
	allow := kadm.NewACLs().Allow(principal).AllowHosts().Topics("*").Groups("*").TransactionalIDs("*").Clusters().
		Operations(kadm.OpAll).ResourcePatternType(kadm.ACLPatternLiteral)
	deny := denied(kadm.NewACLs().Deny(principal).DenyHosts())
	hqAdm := kadm.NewClient(hq.Client(t))
	for _, b := range []*kadm.ACLBuilder{allow, deny} {
		res, err := hqAdm.CreateACLs(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res {
			if r.Err != nil {
				t.Fatalf("create ACL %+v: %v", r, r.Err)
			}
		}
	}
	time.Sleep(time.Second) // ACLs reach the authorizer through the metadata log

	l := newLab(t, o)
	startGateways(t, l)
	const total = 30_000
	produce(t, l, total, 5)
	rest := []string{"payments", "telemetry"}
	var restWant int64
	deadline := time.Now().Add(2 * time.Minute)
	for {
		rep, err := verify.Compare(ctx, l.EdgeOpts(), l.HQOpts(), rest, l.RenameTopic)
		if err == nil && rep.Mirrored+rep.Duplicated+rep.Unexpected >= rep.Produced && rep.Produced > 0 {
			if !rep.OK() || rep.Mirrored != rep.Produced {
				t.Fatalf("route rest not exact while orders is denied: %v\n%v", rep, rep.Samples)
			}
			restWant = rep.Produced
			t.Logf("route rest while orders is denied: %v", rep)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("route rest did not flow while orders is denied: %v %v", rep, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if restWant == 0 || restWant == total {
		t.Fatalf("route rest carries %d of %d records: the test needs some in orders", restWant, total)
	}
	if n := endOffsets(t, l.HQOpts(), []string{"orders"}); n != 0 {
		t.Errorf("orders holds %d records at the destination while writing it is denied", n)
	}
	// The status names the blocked route and why; the other has no error.
	var blocked string
	for time.Now().Before(deadline) && blocked == "" {
		for _, ls := range l.Gateway(lab.HQGateway).Status().Legs {
			if ls.Route == "orders" && strings.Contains(strings.ToLower(ls.LastError), "authoriz") {
				blocked = ls.LastError
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if blocked == "" {
		t.Fatalf("hq status shows no authorization error on route orders: %+v", l.Gateway(lab.HQGateway).Status().Legs)
	}
	t.Logf("hq status, route orders: %s", blocked)
	// The error names the cluster, the principal and the resource.
	for _, want := range []string{"hq/kafka", principal, resource} {
		if !strings.Contains(blocked, want) {
			t.Errorf("hq status error %q does not name %q", blocked, want)
		}
	}
	for _, ls := range l.Gateway(lab.HQGateway).Status().Legs {
		if ls.Route == "rest" && ls.LastError != "" {
			t.Errorf("route rest shows an error in hq status: %s", ls.LastError)
		}
	}

	res, err := hqAdm.DeleteACLs(ctx, deny)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Err != nil {
			t.Fatalf("delete deny ACL: %v", r.Err)
		}
	}
	resumed := time.Now()
	rep := waitExact(t, l, total, 2*time.Minute)
	t.Logf("after the deny ACL was removed, read-back exact in %v: %v", time.Since(resumed).Round(100*time.Millisecond), rep)
}

// TestRealKafkaSASLRefused: the hq gateway logs in with a wrong password.
// Kafka answers SaslAuthenticate with an error: the receiving gateway's
// status names the cluster, the principal and the failed authentication,
// nothing lands, and the gateway keeps serving its status (and would take
// the right password at its next start). Records mode only: the login is
// the same in both modes.
func TestRealKafkaSASLRefused(t *testing.T) {
	const user = "meridian"
	o, edge, hq := realKafka(t, lab.Options{}, kafkatest.Options{Users: map[string]string{user: "meridian-secret"}})
	o.EdgeSASL = &config.SASL{Mechanism: "plain", Username: kafkatest.AdminUser, Password: config.Secret(edge.Password(kafkatest.AdminUser))}
	o.HQSASL = &config.SASL{Mechanism: "plain", Username: user, Password: "not-" + config.Secret(hq.Password(user))}
	l := newLab(t, o)
	startGateways(t, l)
	produce(t, l, 1000, 7)
	var refused string
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) && refused == "" {
		for _, ls := range l.Gateway(lab.HQGateway).Status().Legs {
			if e := strings.ToLower(ls.LastError); strings.Contains(e, "sasl") && strings.Contains(e, "authenticat") {
				refused = ls.LastError
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if refused == "" {
		t.Fatalf("hq status shows no SASL authentication error: %+v", l.Gateway(lab.HQGateway).Status().Legs)
	}
	t.Logf("hq status with a wrong password: %s", refused)
	for _, want := range []string{"hq/kafka", "User:" + user} {
		if !strings.Contains(refused, want) {
			t.Errorf("hq status error %q does not name %q", refused, want)
		}
	}
	if n := endOffsets(t, []kgo.Opt{kgo.SeedBrokers(hq.Bootstrap()...), hq.SASL(kafkatest.AdminUser)}, e2eTopics); n != 0 {
		t.Errorf("the destination holds %d records although the gateway could not log in", n)
	}
}
