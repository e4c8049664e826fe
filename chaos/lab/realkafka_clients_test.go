package lab_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/chaos/lab"
	"github.com/meridian-gw/meridian/config"
	"github.com/meridian-gw/meridian/internal/kafkatest"

	"github.com/meridian-gw/meridian/mirror/dr"
)

// pythonKafka finds a python3 that imports confluent_kafka (librdkafka's
// Python client, from PyPI). Without it the test skips, except under
// CI=true, where .ci/run installs it.
func pythonKafka(t *testing.T) string {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err == nil {
		err = exec.Command(py, "-c", "import confluent_kafka").Run()
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("python3 with confluent_kafka: %v (CI=true: .ci/run must pip install confluent-kafka)", err)
		}
		t.Skipf("python3 with confluent_kafka: %v (python3 -m pip install confluent-kafka)", err)
	}
	return py
}

// groupConsumer runs testdata/group_consumer.py: a confluent-kafka member
// of group reads topic at broker (max records, 0: until idle for 5 s),
// commits and leaves. It returns "partition\toffset\tvalue" lines.
func groupConsumer(t *testing.T, py, broker, group, topic string, max int) []string {
	t.Helper()
	cmd := exec.Command(py, "testdata/group_consumer.py", "--broker", broker, "--group", group, "--topic", topic,
		"--max", fmt.Sprint(max), "--idle", "5", "--timeout", "90")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("confluent-kafka consumer of %s at %s: %v\n%s", group, broker, err, stderr.String())
	}
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(lines) == 1 && lines[0] == "" {
		return nil
	}
	return lines
}

// TestRealKafkaIndependentClientsFailover: kcat produces at the source, the
// mirror carries it, kcat reads the mirror back record for record; a
// confluent-kafka consumer group reads part of the topic at the source,
// the route fails over, and the same group at the new primary resumes
// there: between the two, every record is read once.
func TestRealKafkaIndependentClientsFailover(t *testing.T) {
	bothModes(t, func(t *testing.T, pass bool) {
		kcat, py := kcatPath(t), pythonKafka(t)
		o, edge, hq := realKafka(t, lab.Options{Topics: []string{"ind.events"}, Partitions: 3, Passthrough: pass,
			Routes: []config.Route{{Name: "ind", From: "edge/kafka", To: []string{"hq/kafka"}, StartAt: "earliest", Discover: time.Second,
				Topics: config.TopicFilter{Include: []string{`^ind\.`}}, Groups: &config.GroupFilter{Include: []string{`^py-`}}}}}, kafkatest.Options{})
		l := newLab(t, o)
		startGateways(t, l)

		const n = 3000
		var in bytes.Buffer
		for i := range n {
			fmt.Fprintf(&in, "sensor-%d:{\"reading\":%d}\n", i%23, i)
		}
		prod := exec.Command(kcat, "-P", "-b", edge.Addr(), "-t", "ind.events", "-K", ":", "-H", "origin=kcat", "-z", "lz4")
		prod.Stdin = &in
		if out, err := prod.CombinedOutput(); err != nil {
			t.Fatalf("kcat produce: %v\n%s", err, out)
		}
		src := kcatDump(t, kcat, edge.Addr(), "ind.events")
		dst := kcatWait(kcat, hq.Addr(), "ind.events", n, 90*time.Second)
		for p, want := range mirrored(src, pass, "edge/kafka,hq/kafka") {
			if got := dst[p]; !slices.Equal(got, want) {
				t.Fatalf("partition %s: kcat at the destination sees %d records, the source %d; first difference:\n%s", p, len(got), len(want), firstDiff(got, want))
			}
		}

		// The group reads 1,200 records at the source, commits and leaves.
		first := groupConsumer(t, py, edge.Addr(), "py-app", "ind.events", 1200)
		if len(first) != 1200 {
			t.Fatalf("the group read %d records at the source, want 1200", len(first))
		}
		time.Sleep(2 * time.Second) // the gateway syncs the group too
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		fo := failoverOptions(t, l, l.EdgeOpts(), l.HQOpts())
		rep, err := dr.Failover(ctx, fo)
		if err != nil {
			t.Fatal(err)
		}
		if !rep.Drained || !rep.Fenced || rep.RPORecords != 0 {
			t.Fatalf("failover report %+v: want drained, fenced, RPO 0", rep)
		}
		// The same group at the new primary reads the rest and nothing else.
		second := groupConsumer(t, py, hq.Addr(), "py-app", "ind.events", 0)
		seen := map[string]int{}
		for _, line := range slices.Concat(first, second) {
			f := strings.SplitN(line, "\t", 3)
			if len(f) != 3 {
				t.Fatalf("consumer printed %q", line)
			}
			seen[f[2]]++
		}
		var reread, skipped int
		for i := range n {
			switch c := seen[fmt.Sprintf("{\"reading\":%d}", i)]; {
			case c == 0:
				skipped++
			case c > 1:
				reread += c - 1
			}
		}
		t.Logf("confluent-kafka group: %d records at the source, %d at the new primary after the failover (%.2f s): %d re-read, %d skipped",
			len(first), len(second), rep.Seconds, reread, skipped)
		if reread != 0 || skipped != 0 || len(first)+len(second) != n {
			t.Fatalf("the group re-read %d and skipped %d records across the failover (%d + %d read of %d)", reread, skipped, len(first), len(second), n)
		}
	})
}
