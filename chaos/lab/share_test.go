package lab_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-gw/meridian/chaos/lab"
	"github.com/meridian-gw/meridian/mirror"
)

const shareTopology = `version: 1
regions:
  - name: plant
    clusters: [{name: kafka, kind: kafka, bootstrap: ["127.0.0.1:1"]}]
    gateways:
      - {name: plant-a, listen: "127.0.0.1:1", tls: {ca_file: ca.crt, cert_file: plant-a.crt, key_file: plant-a.key}}
      - {name: plant-b, listen: "127.0.0.1:1", tls: {ca_file: ca.crt, cert_file: plant-b.crt, key_file: plant-b.key}}
  - name: hq
    clusters: [{name: kafka, kind: kafka, bootstrap: ["127.0.0.1:1"]}]
    gateways: [{name: hq-a, listen: "127.0.0.1:1", tls: {ca_file: ca.crt, cert_file: hq-a.crt, key_file: hq-a.key}}]
links:
  - {name: plant--hq, between: [plant, hq], profile: lan, compression: zstd}
routes:
  - {name: telemetry, from: plant/kafka, to: [hq/kafka], topics: {include: ['^telemetry\.']}, discover: 500ms, share_timeout: 6s}
`

// buildMeridian builds the meridian binary into a temporary directory.
func buildMeridian(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "meridian")
	out, err := exec.Command("go", "build", "-o", bin, "../../cmd/meridian").CombinedOutput()
	if err != nil {
		t.Fatalf("go build ./cmd/meridian: %v\n%s", err, out)
	}
	return bin
}

// processFleet runs the topology file text topo as a fleet (lab.NewFleet:
// its clusters in the test, a CA for the run), starts the gateways named
// in inProcess in the test, and writes the running topology, which the
// other gateways run from as processes of bin (startGateway). The fleet
// closes when the test ends.
func processFleet(t *testing.T, topo string, partitions int32, inProcess ...string) (fl *lab.Fleet, running, bin string) {
	t.Helper()
	bin = buildMeridian(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "topology.yaml")
	if err := os.WriteFile(src, []byte(topo), 0o600); err != nil {
		t.Fatal(err)
	}
	f, _, err := lab.LoadFleetFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if fl, err = lab.NewFleet(f, lab.FleetOptions{Logger: testLogger(), Partitions: partitions, TopicsPerRoute: 2}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fl.Close() })
	running = filepath.Join(dir, "running.yaml")
	if err := fl.WriteFile(running); err != nil {
		t.Fatal(err)
	}
	for _, g := range inProcess {
		if err := fl.Start(g); err != nil {
			t.Fatal(err)
		}
	}
	return fl, running, bin
}

// hqShares is the inbound leg's shares on hq-a.
func hqShares(fl *lab.Fleet) []mirror.ShareStatus {
	for _, l := range fl.Gateway("hq-a").Status().Legs {
		if l.Direction == "in" {
			return l.Shares
		}
	}
	return nil
}

// heldBy returns the number of partitions each gateway holds at hq-a.
func heldBy(fl *lab.Fleet) map[string]int {
	out := map[string]int{}
	for _, s := range hqShares(fl) {
		out[s.Gateway] += len(s.Partitions)
	}
	return out
}

func waitHeld(t *testing.T, fl *lab.Fleet, within time.Duration, ok func(map[string]int) bool, what string) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		h := heldBy(fl)
		if ok(h) {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("after %v: hq-a's shares are %+v; want %s", within, hqShares(fl), what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// counterSum sums a counter family's series whose labels include want.
func counterSum(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for k, v := range want {
				found := false
				for _, l := range m.GetLabel() {
					found = found || l.GetName() == k && l.GetValue() == v
				}
				if !found {
					continue series
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// TestSharedLegSurvivesAZombieSender: two gateways of a plant share a
// leg to HQ through the consumer group on the plant's cluster; one runs
// as its own process. While records flow, that process is paused with
// SIGSTOP for 8 s: longer than the group's session timeout (6 s), so the
// group moves its partitions to the other gateway, which claims them at
// HQ in a later generation, and shorter than the link's idle timeout
// (10 s), so its session to HQ survives. Then SIGCONT: the zombie wakes
// up still believing it owns its partitions, and what it sends of them
// is dropped. It then rejoins the group and gets a share back. Every
// record is read back from HQ exactly once, in order.
func TestSharedLegSurvivesAZombieSender(t *testing.T) {
	if testing.Short() {
		t.Skip("pauses a gateway process for 8 s")
	}
	// Mostly waits on a paused or dead process: it overlaps the
	// other process tests of this file.
	t.Parallel()
	fl, running, bin := processFleet(t, shareTopology, 6, "hq-a", "plant-a")
	pid, _ := startGateway(t, bin, running, "plant-b")
	// 12 partitions (2 topics × 6), split between the two gateways.
	waitHeld(t, fl, 60*time.Second, func(h map[string]int) bool {
		return h["plant-a"] > 0 && h["plant-b"] > 0 && h["plant-a"]+h["plant-b"] == 12
	},
		"12 partitions split between plant-a and plant-b")

	pctx, stopProducing := context.WithCancel(t.Context())
	produced := make(chan error, 1)
	go func() { produced <- fl.Produce(pctx, 400) }()
	time.Sleep(3 * time.Second)

	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	moved := waitHeld(t, fl, 30*time.Second, func(h map[string]int) bool { return h["plant-a"] == 12 }, "plant-a holding all 12 partitions")
	t.Logf("partitions moved to plant-a %.1f s after SIGSTOP (share_timeout 6 s)", moved.Seconds())
	time.Sleep(time.Until(paused.Add(8 * time.Second)))
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	back := waitHeld(t, fl, 60*time.Second, func(h map[string]int) bool { return h["plant-b"] > 0 && h["plant-a"]+h["plant-b"] == 12 },
		"plant-b back with a share")
	t.Logf("plant-b had a share again %.1f s after SIGCONT", back.Seconds())
	time.Sleep(2 * time.Second)
	stopProducing()
	if err := <-produced; err != nil && !strings.Contains(err.Error(), "context canceled") {
		t.Fatal(err)
	}

	reps := fl.WaitVerified(t.Context(), 60*time.Second)
	for _, r := range reps {
		t.Logf("%s → %s: %s %s", r.Route, r.To, r.Report.String(), r.Err)
		if !r.Exact() || r.Mirrored == 0 {
			t.Errorf("%s → %s not exact: %s %s %v", r.Route, r.To, r.Report.String(), r.Err, r.Samples)
		}
	}
	reg := fl.Gateway("hq-a").Registry()
	refused := counterSum(t, reg, "meridian_share_claims_total", map[string]string{"result": "refused"})
	stale := counterSum(t, reg, "meridian_dropped_batches_total", map[string]string{"reason": "stale-gen"})
	t.Logf("at hq-a: %v partitions of zombie claims refused, %v stale batches dropped", refused, stale)
	if took := counterSum(t, reg, "meridian_share_claims_total", map[string]string{"result": "took"}); took < 12+6 {
		t.Errorf("hq-a saw %v partitions change claimer; want at least 18 (12 at the start, then plant-b's 6 or so to plant-a and back)", took)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

const standbyTopology = `version: 1
regions:
  - name: plant
    clusters: [{name: kafka, kind: kafka, bootstrap: ["127.0.0.1:1"]}]
    gateways:
      - {name: plant-a, listen: "127.0.0.1:1", tls: {ca_file: ca.crt, cert_file: plant-a.crt, key_file: plant-a.key}}
  - name: hq
    clusters: [{name: kafka, kind: kafka, bootstrap: ["127.0.0.1:1"]}]
    gateways:
      - {name: hq-a, listen: "127.0.0.1:1", tls: {ca_file: ca.crt, cert_file: hq-a.crt, key_file: hq-a.key}}
      - {name: hq-b, listen: "127.0.0.1:1", tls: {ca_file: ca.crt, cert_file: hq-b.crt, key_file: hq-b.key}}
links:
  - {name: plant--hq, between: [plant, hq], profile: lan, compression: zstd}
routes:
  - {name: telemetry, from: plant/kafka, to: [hq/kafka], topics: {include: ['^telemetry\.']}, discover: 500ms}
`

// startGateway runs gateway name of the running topology as its own
// process and returns its PID; the process is stopped (SIGCONT, then
// SIGTERM) when the test ends, and its log printed if the test failed.
func startGateway(t *testing.T, bin, running, name string) (pid int, log func() string) {
	t.Helper()
	var logs bytes.Buffer
	var mu sync.Mutex
	cmd := exec.Command(bin, "run", "-f", running, "-g", name)
	cmd.Stdout, cmd.Stderr = lockedWriter{&mu, &logs}, lockedWriter{&mu, &logs}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid = cmd.Process.Pid
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	log = func() string {
		mu.Lock()
		defer mu.Unlock()
		return logs.String()
	}
	t.Cleanup(func() {
		// Signal the process only while it has not been reaped: its PID
		// may belong to another process afterwards.
		signal := func(sig syscall.Signal) {
			select {
			case <-exited:
			default:
				_ = cmd.Process.Signal(sig)
			}
		}
		signal(syscall.SIGCONT)
		signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			signal(syscall.SIGKILL)
			<-exited
		}
		mu.Lock()
		defer mu.Unlock()
		if t.Failed() {
			t.Logf("%s's log:\n%s", name, logs.String())
		}
	})
	return pid, log
}

// TestStandbyReceiverFencesAZombie: HQ has two gateways; hq-a, the
// region's first, runs as its own process and writes the plant's leg.
// While records flow it is paused with SIGSTOP for 15 s, past the link's
// idle timeout: the plant's gateway moves the leg to hq-b, whose
// producers (the same transactional IDs) fence hq-a's and which resumes
// from what is committed. Then SIGCONT: hq-a wakes up inside a
// transaction whose commit fails, fenced, and nothing of it lands; it
// reopens nothing while no session carries the leg. Every record is read
// back from HQ exactly once, in order.
func TestStandbyReceiverFencesAZombie(t *testing.T) {
	if testing.Short() {
		t.Skip("pauses a gateway process for 15 s")
	}
	// Mostly waits on a paused or dead process: it overlaps the
	// other process tests of this file.
	t.Parallel()
	fl, running, bin := processFleet(t, standbyTopology, 4)
	pid, hqaLog := startGateway(t, bin, running, "hq-a")
	for _, g := range []string{"hq-b", "plant-a"} {
		if err := fl.Start(g); err != nil {
			t.Fatal(err)
		}
	}
	pctx, stopProducing := context.WithCancel(t.Context())
	produced := make(chan error, 1)
	go func() { produced <- fl.Produce(pctx, 400) }()
	// hq-a writes first: the plant's peer has no standby in use.
	deadline := time.Now().Add(60 * time.Second)
	for fl.Produced() < 2000 || standbyOf(fl) != "" {
		if time.Now().After(deadline) {
			t.Fatalf("no traffic through hq-a within 60 s (produced %d, standby %q)", fl.Produced(), standbyOf(fl))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	for standbyOf(fl) != "hq-b" {
		if time.Since(paused) > 45*time.Second {
			t.Fatalf("the leg did not move to hq-b within 45 s of hq-a's SIGSTOP")
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("leg moved to hq-b %.1f s after hq-a's SIGSTOP (link idle timeout 10 s)", time.Since(paused).Seconds())
	time.Sleep(time.Until(paused.Add(15 * time.Second)))
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	woke := len(hqaLog())
	time.Sleep(5 * time.Second)
	stopProducing()
	if err := <-produced; err != nil && !strings.Contains(err.Error(), "context canceled") {
		t.Fatal(err)
	}
	reps := fl.WaitVerified(t.Context(), 60*time.Second)
	for _, r := range reps {
		t.Logf("%s → %s: %s %s", r.Route, r.To, r.Report.String(), r.Err)
		if !r.Exact() || r.Mirrored == 0 {
			t.Errorf("%s → %s not exact: %s %s %v", r.Route, r.To, r.Report.String(), r.Err, r.Samples)
		}
	}
	var wroteB int64
	for _, l := range fl.Gateway("hq-b").Status().Legs {
		if l.Direction == "in" {
			wroteB += l.Records
		}
	}
	if wroteB == 0 {
		t.Error("hq-b wrote nothing: the leg never moved to the standby receiver")
	}
	t.Logf("hq-b wrote %d records after the move", wroteB)
	// What hq-a did when it woke up: a transaction it was inside fails,
	// fenced by hq-b's producers (kfake says INVALID_PRODUCER_EPOCH,
	// Kafka PRODUCER_FENCED); paused between transactions, it has
	// nothing to fail. The read-back above is what proves nothing of it
	// landed.
	failed := 0
	for _, line := range strings.Split(hqaLog()[woke:], "\n") {
		if strings.Contains(line, "INVALID_PRODUCER_EPOCH") || strings.Contains(line, "PRODUCER_FENCED") {
			failed++
			if failed == 1 {
				t.Logf("hq-a after SIGCONT: %s", line)
			}
		}
	}
	t.Logf("hq-a: %d transactions failed fenced after SIGCONT", failed)
}

// standbyOf is the standby receiver plant-a's legs go to ("" for none).
func standbyOf(fl *lab.Fleet) string {
	for _, p := range fl.Gateway("plant-a").Status().Peers {
		if p.Standby != "" {
			return p.Standby
		}
	}
	return ""
}

// TestSharedLegAfterSIGKILL: one of a plant's two gateways is killed
// (SIGKILL: no leave, no drain) while records flow. With the default
// share_timeout (10 s) its partitions are written again by the other
// gateway within 15 s of its death (issue target), and every record is
// read back from HQ exactly once.
func TestSharedLegAfterSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out a 10 s group session")
	}
	// Mostly waits on a paused or dead process: it overlaps the
	// other process tests of this file.
	t.Parallel()
	fl, running, bin := processFleet(t, strings.Replace(shareTopology, ", share_timeout: 6s", "", 1), 6, "hq-a", "plant-a")
	pid, _ := startGateway(t, bin, running, "plant-b")
	waitHeld(t, fl, 60*time.Second, func(h map[string]int) bool {
		return h["plant-a"] > 0 && h["plant-b"] > 0 && h["plant-a"]+h["plant-b"] == 12
	}, "12 partitions split between plant-a and plant-b")
	pctx, stopProducing := context.WithCancel(t.Context())
	produced := make(chan error, 1)
	go func() { produced <- fl.Produce(pctx, 400) }()
	time.Sleep(3 * time.Second)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	moved := waitHeld(t, fl, 15*time.Second, func(h map[string]int) bool { return h["plant-a"] == 12 }, "plant-a holding all 12 partitions within 15 s of the kill")
	t.Logf("partitions written by plant-a %.1f s after plant-b was killed (share_timeout 10 s)", moved.Seconds())
	time.Sleep(3 * time.Second)
	stopProducing()
	if err := <-produced; err != nil && !strings.Contains(err.Error(), "context canceled") {
		t.Fatal(err)
	}
	for _, r := range fl.WaitVerified(t.Context(), 60*time.Second) {
		t.Logf("%s → %s: %s %s", r.Route, r.To, r.Report.String(), r.Err)
		if !r.Exact() || r.Mirrored == 0 {
			t.Errorf("%s → %s not exact: %s %s %v", r.Route, r.To, r.Report.String(), r.Err, r.Samples)
		}
	}
}
