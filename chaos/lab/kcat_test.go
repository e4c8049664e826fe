package lab_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/chaos/lab"
)

// kcatPath finds kcat (Debian ships it as kcat and kafkacat). Without it the
// test skips, except in CI, where .ci/run installs it and a skip would hide a
// broken install step.
func kcatPath(t *testing.T) string {
	for _, name := range []string{"kcat", "kafkacat"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("kcat is not installed (CI=true: .ci/run must install the kcat package)")
	}
	t.Skip("kcat is not installed (apt-get install kcat)")
	return ""
}

// kcatDump consumes a whole topic with kcat and returns its records grouped
// by partition, in partition order, as "key|value|headers|timestamp".
func kcatDump(t *testing.T, kcat, broker, topic string) map[string][]string {
	t.Helper()
	parts, err := kcatTryDump(kcat, broker, topic)
	if err != nil {
		t.Fatal(err)
	}
	return parts
}

// kcatWait dumps topic with kcat until it holds n records or within
// passes (kcat failing meanwhile, for a topic not there yet, counts as
// none), and returns the last dump.
func kcatWait(kcat, broker, topic string, n int, within time.Duration) map[string][]string {
	deadline := time.Now().Add(within)
	for {
		dst, _ := kcatTryDump(kcat, broker, topic)
		got := 0
		for _, recs := range dst {
			got += len(recs)
		}
		if got >= n || time.Now().After(deadline) {
			return dst
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// kcatTryDump is kcatDump that returns kcat's failure (for a topic that
// does not exist yet, say).
func kcatTryDump(kcat, broker, topic string) (map[string][]string, error) {
	cmd := exec.Command(kcat, "-C", "-b", broker, "-t", topic, "-o", "beginning", "-e", "-q",
		"-X", "isolation.level=read_committed", "-f", `%p|%k|%s|%h|%T\n`)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("kcat consume %s from %s: %v\n%s", topic, broker, err, stderr.String())
	}
	parts := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSuffix(string(out), "\n"), "\n") {
		if line == "" {
			continue
		}
		p, rest, _ := strings.Cut(line, "|")
		parts[p] = append(parts[p], rest)
	}
	return parts, nil
}

// With passthrough, kcat reads at the destination the very batches it
// wrote at the source (librdkafka's snappy framing included).
func TestKcatProducesAndConsumesThroughTheMirror(t *testing.T) {
	for _, pass := range []bool{false, true} {
		t.Run(map[bool]string{false: "records", true: "passthrough"}[pass], func(t *testing.T) { testKcat(t, pass) })
	}
}

func testKcat(t *testing.T, passthrough bool) {
	kcat := kcatPath(t)
	l := newLab(t, lab.Options{Topics: []string{"kcat.events"}, Partitions: 3, Rename: "{source_region}.{topic}", Passthrough: passthrough})
	for _, g := range []string{lab.HQGateway, lab.EdgeGateway} {
		if err := l.Start(g); err != nil {
			t.Fatal(err)
		}
	}
	const n = 300
	var in bytes.Buffer
	for i := 0; i < n; i++ {
		fmt.Fprintf(&in, "sensor-%d:{\"reading\":%d,\"unit\":\"C\"}\n", i%17, i)
	}
	prod := exec.Command(kcat, "-P", "-b", l.Edge.ListenAddrs()[0], "-t", "kcat.events", "-K", ":",
		"-H", "origin=kcat", "-H", "schema=reading.v1", "-z", "snappy")
	prod.Stdin = &in
	if out, err := prod.CombinedOutput(); err != nil {
		t.Fatalf("kcat produce: %v\n%s", err, out)
	}

	src := kcatDump(t, kcat, l.Edge.ListenAddrs()[0], "kcat.events")
	total := 0
	for _, recs := range src {
		total += len(recs)
	}
	if total != n {
		t.Fatalf("kcat read %d records back from the source, want %d", total, n)
	}
	dst := kcatWait(kcat, l.HQ.ListenAddrs()[0], "edge.kcat.events", n, 60*time.Second)
	// Same records (key, value, headers, timestamp) in the same partition, in
	// the same order, as kcat sees them at the source, with their path.
	for p, want := range mirrored(src, passthrough, "edge/kafka,hq/kafka") {
		if got := dst[p]; !slices.Equal(got, want) {
			t.Errorf("partition %s: kcat at the destination sees %d records, source has %d; first difference:\n%s", p, len(got), len(want), firstDiff(got, want))
		}
	}
	for p := range dst {
		if _, ok := src[p]; !ok {
			t.Errorf("destination partition %s has records the source partition does not", p)
		}
	}
	if !strings.Contains(strings.Join(dst["0"], "\n")+strings.Join(dst["1"], "\n")+strings.Join(dst["2"], "\n"), "origin=kcat") {
		t.Errorf("headers did not survive: %v", dst)
	}
}

func firstDiff(got, want []string) string {
	for i := range max(len(got), len(want)) {
		var g, w string
		if i < len(got) {
			g = got[i]
		}
		if i < len(want) {
			w = want[i]
		}
		if g != w {
			return fmt.Sprintf("  record %d: got  %q\n  record %d: want %q", i, g, i, w)
		}
	}
	return "(none)"
}

// mirrored is what kcat should see at the destination of a leg for the
// records src it saw at the source: in record mode the sending gateway
// adds the meridian.origin header, the clusters the record has been
// written to (docs/active-active.md), after the record's own headers;
// passthrough forwards Kafka's batches untouched.
func mirrored(src map[string][]string, pass bool, path string) map[string][]string {
	if pass {
		return src
	}
	out := map[string][]string{}
	for p, lines := range src {
		for _, line := range lines {
			f := strings.Split(line, "|") // key|value|headers|timestamp
			if len(f) == 4 {
				if f[2] != "" {
					f[2] += ","
				}
				f[2] += "meridian.origin=" + path
				line = strings.Join(f, "|")
			}
			out[p] = append(out[p], line)
		}
	}
	return out
}
