package kafkatest_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/meridian-gw/meridian/internal/kafkatest"
)

func TestPomVersionMatches(t *testing.T) {
	b, err := os.ReadFile("pom.xml")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`<kafka.version>([^<]+)</kafka.version>`).FindSubmatch(b)
	if m == nil {
		t.Fatal("pom.xml: no kafka.version")
	}
	if got, want := string(m[1]), kafkatest.Version; got != want {
		t.Errorf("pom.xml kafka.version = %s, want kafkatest.Version %s", got, want)
	}
}

// TestSmoke writes with an idempotent and a transactional producer (one
// transaction committed, one aborted), reads with read_committed, kills the
// broker with SIGKILL, restarts it and reads everything back.
func TestSmoke(t *testing.T) {
	c := kafkatest.Start(t, 1, kafkatest.Options{})[0]
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	const topic = "smoke"
	adm := kadm.NewClient(c.Client(t))
	if _, err := adm.CreateTopic(ctx, 3, 1, nil, topic); err != nil {
		t.Fatalf("create topic: %v", err)
	}

	// Idempotent (franz-go's default) producer.
	idem := c.Client(t, kgo.DefaultProduceTopic(topic))
	var recs []*kgo.Record
	for i := range 300 {
		recs = append(recs, &kgo.Record{Key: fmt.Appendf(nil, "k%d", i%7), Value: fmt.Appendf(nil, "idem-%d", i)})
	}
	if err := idem.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("idempotent produce: %v", err)
	}

	txn := func(id, prefix string, n int, commit kgo.TransactionEndTry) {
		t.Helper()
		cl := c.Client(t, kgo.DefaultProduceTopic(topic), kgo.TransactionalID(id))
		if err := cl.BeginTransaction(); err != nil {
			t.Fatalf("begin %s: %v", id, err)
		}
		for i := range n {
			cl.Produce(ctx, &kgo.Record{Key: fmt.Appendf(nil, "t%d", i%5), Value: fmt.Appendf(nil, "%s-%d", prefix, i)}, nil)
		}
		if err := cl.Flush(ctx); err != nil {
			t.Fatalf("flush %s: %v", id, err)
		}
		if err := cl.EndTransaction(ctx, commit); err != nil {
			t.Fatalf("end %s: %v", id, err)
		}
		cl.Close()
	}
	txn("smoke-tx", "committed", 200, kgo.TryCommit)
	txn("smoke-tx", "aborted", 50, kgo.TryAbort)

	want := map[string]int{"idem": 300, "committed": 200}
	readCommitted(t, ctx, c, topic, want)

	pid := c.PID()
	if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		rss := regexp.MustCompile(`VmRSS:\s+(\d+) kB`).FindSubmatch(st)
		if rss != nil {
			t.Logf("broker pid %d RSS after the workload: %s kB", pid, rss[1])
		}
	}
	if err := c.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := c.Restart(); err != nil {
		t.Fatal(err)
	}
	if c.PID() == pid || c.PID() == 0 {
		t.Fatalf("pid after restart = %d, before %d: want a new JVM", c.PID(), pid)
	}
	readCommitted(t, ctx, c, topic, want)

	// The same transactional ID works after the crash, and the aborted
	// records still never show.
	txn("smoke-tx", "after", 10, kgo.TryCommit)
	want["after"] = 10
	readCommitted(t, ctx, c, topic, want)
}

// readCommitted reads topic from the start with read_committed until it has
// the wanted number of records per value prefix, and fails on any other.
func readCommitted(t *testing.T, ctx context.Context, c *kafkatest.Cluster, topic string, want map[string]int) {
	t.Helper()
	total := 0
	for _, n := range want {
		total += n
	}
	cl := c.Client(t,
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)
	defer cl.Close()
	got := map[string]int{}
	seen := 0
	for seen < total {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("read %d of %d records (%v): %v", seen, total, got, err)
		}
		fs.EachError(func(tp string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", tp, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			prefix, _, _ := strings.Cut(string(r.Value), "-")
			got[prefix]++
			seen++
		})
	}
	for k, n := range got {
		if n != want[k] {
			t.Errorf("records %q: got %d, want %d", k, n, want[k])
		}
	}
}

// TestTwoClusters starts two clusters at once and checks they are separate.
func TestTwoClusters(t *testing.T) {
	cs := kafkatest.Start(t, 2, kafkatest.Options{Heap: "384m"})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ids := map[string]bool{}
	for i, c := range cs {
		cl := c.Client(t, kgo.DefaultProduceTopic("two"), kgo.AllowAutoTopicCreation())
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: fmt.Appendf(nil, "cluster-%d", i)}).FirstErr(); err != nil {
			t.Fatalf("produce to %s: %v", c.Addr(), err)
		}
		m, err := kadm.NewClient(cl).Metadata(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ids[m.Cluster] = true
		ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, "two")
		if err != nil {
			t.Fatal(err)
		}
		if o, _ := ends.Lookup("two", 0); o.Offset != 1 {
			t.Errorf("cluster %d (%s): end offset %d, want 1 (one record each)", i, c.Addr(), o.Offset)
		}
	}
	if len(ids) != 2 {
		t.Errorf("cluster IDs %v: want two different", ids)
	}
}

// TestSASLAndACLs starts a cluster with SASL/PLAIN users and the
// StandardAuthorizer: a wrong password is refused at login, a user without
// ACLs is denied the topic, and the same user may write once granted.
func TestSASLAndACLs(t *testing.T) {
	c := kafkatest.Start(t, 1, kafkatest.Options{Users: map[string]string{"alice": "alice-secret"}, Authorizer: true})[0]
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const topic = "guarded"
	adm := kadm.NewClient(c.Client(t))
	if _, err := adm.CreateTopic(ctx, 1, 1, nil, topic); err != nil {
		t.Fatalf("create topic as %s: %v", kafkatest.AdminUser, err)
	}

	// No SASL at all, and a wrong password: the broker refuses the login.
	for name, opts := range map[string][]kgo.Opt{
		"no sasl":        nil,
		"wrong password": {kgo.SASL(plain.Auth{User: "alice", Pass: "nope"}.AsMechanism())},
	} {
		cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.Addr()), kgo.RetryTimeout(3 * time.Second), kgo.DialTimeout(2 * time.Second)}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		lctx, lcancel := context.WithTimeout(ctx, 10*time.Second)
		_, err = kadm.NewClient(cl).BrokerMetadata(lctx)
		lcancel()
		cl.Close()
		if err == nil {
			t.Errorf("%s: metadata succeeded, want the login refused", name)
		}
	}

	alice := c.ClientAs(t, "alice", kgo.DefaultProduceTopic(topic), kgo.RecordRetries(2))
	err := alice.ProduceSync(ctx, &kgo.Record{Value: []byte("denied")}).FirstErr()
	if !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Fatalf("produce as alice without ACLs: %v, want TOPIC_AUTHORIZATION_FAILED", err)
	}

	acl := kadm.NewACLs().Allow("User:alice").AllowHosts().Topics(topic).Operations(kadm.OpWrite, kadm.OpDescribe).ResourcePatternType(kadm.ACLPatternLiteral)
	res, err := adm.CreateACLs(ctx, acl)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Err != nil {
			t.Fatalf("create ACL: %v", r.Err)
		}
	}
	// ACLs reach the authorizer through the metadata log: retry briefly.
	deadline := time.Now().Add(15 * time.Second)
	for {
		alice := c.ClientAs(t, "alice", kgo.DefaultProduceTopic(topic))
		err = alice.ProduceSync(ctx, &kgo.Record{Value: []byte("allowed")}).FirstErr()
		alice.Close()
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("produce as alice with a write ACL: %v", err)
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := ends.Lookup(topic, 0); o.Offset != 1 {
		t.Errorf("end offset of %s = %d, want 1 (only the allowed record)", topic, o.Offset)
	}
}
