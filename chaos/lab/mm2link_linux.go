package lab

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/meridian-gw/meridian/internal/kafkatest"
)

// realCluster is a real Apache Kafka broker in a lab region.
type realCluster struct {
	c    *kafkatest.Cluster
	stop func() error
}

func (r realCluster) ListenAddrs() []string { return r.c.Bootstrap() }
func (r realCluster) Close()                { _ = r.stop() }

// startRealKafka starts one broker in each of the regions edge and hq: its
// JVM runs in the region's namespace (nsenter) and listens on the region's
// lab address, so everything that reaches it from the other region crosses
// the emulated link. The namespace's default TCP congestion control is set
// to the lab's, since the JVMs' sockets are not made by the lab's helpers.
func (e *linkEnv) startRealKafka() (err error) {
	dir, err := os.MkdirTemp("", "meridian-linkbench-kafka-")
	if err != nil {
		return err
	}
	e.realDir = dir
	for _, r := range [][2]string{{"edge", "hq"}, {"hq", "edge"}} {
		if err := e.routeCongestion(r[0], r[1]); err != nil {
			return err
		}
	}
	cfg := map[string]string{}
	if e.o.KafkaTuned {
		cfg["socket.send.buffer.bytes"] = "-1"
		cfg["socket.receive.buffer.bytes"] = "-1"
	}
	logf := func(format string, args ...any) {
		e.o.Logger.Info(fmt.Sprintf(format, args...), "component", "kafkatest")
	}
	start := func(region string) (realCluster, error) {
		region0 := region
		cs, stop, err := kafkatest.Launch(1, kafkatest.Options{
			Dir: filepath.Join(dir, region), Host: e.lab.Addr(region).String(), Config: maps.Clone(cfg), JVMArgs: FullJIT,
			Command: func(name string, args ...string) *exec.Cmd { return e.lab.Command(region0, name, args...) },
			Dialer:  e.lab.DialContext(region),
		}, logf)
		if err != nil {
			return realCluster{}, fmt.Errorf("%s broker: %w", region, err)
		}
		return realCluster{cs[0], stop}, nil
	}
	edge, err := start("edge")
	if err != nil {
		return err
	}
	e.edge = edge
	hq, err := start("hq")
	if err != nil {
		return err
	}
	e.hq = hq
	return createTopics(e.clientOpts(e.edge, "edge"), e.o.Partitions, e.topics)
}

// runMM2 runs Apache MirrorMaker 2 in the hq namespace (next to its
// target, as its documentation advises), consuming the edge broker across
// the link, until ctx ends. Topics keep their names
// (IdentityReplicationPolicy), so the destination is read as for the other
// contenders.
func (e *linkEnv) runMM2(ctx context.Context) error {
	cfg := map[string]string{
		"replication.policy.class": "org.apache.kafka.connect.mirror.IdentityReplicationPolicy",
		"emit.checkpoints.enabled": "false",
		"emit.heartbeats.enabled":  "false",
	}
	if e.o.KafkaTuned {
		for k, v := range map[string]string{
			"a.consumer.receive.buffer.bytes": "-1", "a.consumer.send.buffer.bytes": "-1",
			"a.consumer.request.timeout.ms": "120000", "a.admin.request.timeout.ms": "120000",
			"a.receive.buffer.bytes": "-1", "a.send.buffer.bytes": "-1", "a.request.timeout.ms": "120000",
		} {
			cfg[k] = v
		}
	}
	maps.Copy(cfg, e.o.MM2Config)
	mm, err := kafkatest.StartMM2(kafkatest.MM2Options{Source: e.edge.ListenAddrs(), Target: e.hq.ListenAddrs(), Topics: `link\..*`,
		Groups: "none", Config: cfg, JVMArgs: FullJIT, Heap: "512m", Dir: filepath.Join(e.realDir, "mm2"),
		Command: func(name string, args ...string) *exec.Cmd { return e.lab.Command("hq", name, args...) },
		Logf: func(format string, args ...any) {
			e.o.Logger.Info(fmt.Sprintf(format, args...), "component", "kafkatest")
		}})
	if err != nil {
		return err
	}
	defer mm.Kill()
	select {
	case <-ctx.Done():
		return nil
	case <-mm.Exited():
		return fmt.Errorf("MirrorMaker 2 exited; last lines of %s:\n%s", mm.LogFile(), mm.Tail(20))
	}
}

// routeCongestion sets the lab's TCP congestion control on the route from
// one region to the other (ip route change ... congctl), which every TCP
// socket on that path then uses, the JVMs' included. The namespace's
// default (net.ipv4.tcp_congestion_control, inherited from the host) cannot
// be changed here: /proc/sys is read-only in this container.
func (e *linkEnv) routeCongestion(from, to string) error {
	dst := netip.PrefixFrom(e.lab.Addr(to), 24).Masked().String()
	out, err := e.lab.Command(from, "ip", "-4", "route", "show", dst).Output()
	if err != nil {
		return fmt.Errorf("%s: ip route show %s: %w", from, dst, err)
	}
	f := strings.Fields(strings.TrimSpace(string(out)))
	if len(f) == 0 {
		return fmt.Errorf("%s: no route to %s", from, dst)
	}
	args := []string{"route", "change"}
	for i := 0; i < len(f); i++ {
		if f[i] == "congctl" { // replaced below
			i++
			if i < len(f) && f[i] == "lock" {
				i++
			}
			continue
		}
		args = append(args, f[i])
	}
	args = append(args, "congctl", e.o.TCPCongestion)
	if out, err := e.lab.Command(from, "ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: ip %s: %w: %s", from, strings.Join(args, " "), err, out)
	}
	return nil
}
