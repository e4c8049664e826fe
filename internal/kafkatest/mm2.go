package kafkatest

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// MM2DefaultHeap is MirrorMaker 2's maximum Java heap when MM2Options.Heap
// is empty.
const MM2DefaultHeap = "384m"

// MM2Options say how StartMM2 runs Apache MirrorMaker 2 in dedicated mode
// (org.apache.kafka.connect.mirror.MirrorMaker with an mm2.properties) from
// the same jars as the brokers. One flow runs, Source → Target; the
// reverse flow is disabled.
type MM2Options struct {
	// Source and Target are the clusters' bootstrap addresses. Required.
	Source, Target []string
	// SourceAlias and TargetAlias name the clusters in mm2.properties and,
	// with the default replication policy, prefix the remote topics
	// ("a.orders"). "": "a" and "b".
	SourceAlias, TargetAlias string
	// Topics and Groups are the flow's regular expressions (Java regex).
	// "": every topic (".*"), every group (".*").
	Topics, Groups string
	// Config holds mm2.properties entries that replace or extend the
	// defaults (see MM2Config), for example "tasks.max",
	// "replication.policy.class" or per-client settings such as
	// "a.consumer.fetch.max.wait.ms". nil: the defaults alone.
	Config map[string]string
	// Heap is the maximum Java heap (-Xmx). "": MM2DefaultHeap.
	Heap string
	// JVMArgs come after the harness's own java arguments (serial GC, C1
	// only), so they win: "-XX:TieredStopAtLevel=4" for full JIT in
	// benchmarks. nil: none.
	JVMArgs []string
	// Dir holds mm2.properties, log4j2.properties, mm2.log and stdout.log;
	// it is created if missing and left in place. Required.
	Dir string
	// Command builds the command that runs the JVM, for example inside a
	// network namespace (netlab's Lab.Command); as for Options.Command the
	// JVM must be the process started. nil: exec.Command.
	Command func(name string, args ...string) *exec.Cmd
	// Logf receives a line when MirrorMaker starts and stops; nil: nowhere.
	Logf func(format string, args ...any)
}

// MirrorMaker is a running Apache MirrorMaker 2 JVM. Its methods are safe
// for concurrent use.
type MirrorMaker struct {
	dir  string
	logf func(string, ...any)

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited and been reaped
}

// MM2Config returns the mm2.properties entries StartMM2 writes for o,
// defaults first, then o.Config over them. Every interval that decides
// how soon MirrorMaker 2 notices something is set explicitly (to 1 s, its
// defaults are 5 to 600 s), and so is every replication factor (1: single
// brokers).
func MM2Config(o MM2Options) map[string]string {
	a, b := alias(o.SourceAlias, "a"), alias(o.TargetAlias, "b")
	topics, groups := o.Topics, o.Groups
	if topics == "" {
		topics = ".*"
	}
	if groups == "" {
		groups = ".*"
	}
	cfg := map[string]string{
		"clusters":                              a + ", " + b,
		a + ".bootstrap.servers":                strings.Join(o.Source, ","),
		b + ".bootstrap.servers":                strings.Join(o.Target, ","),
		a + "->" + b + ".enabled":               "true",
		a + "->" + b + ".topics":                topics,
		a + "->" + b + ".groups":                groups,
		b + "->" + a + ".enabled":               "false",
		"tasks.max":                             "4",
		"replication.factor":                    "1",
		"checkpoints.topic.replication.factor":  "1",
		"heartbeats.topic.replication.factor":   "1",
		"offset-syncs.topic.replication.factor": "1",
		"offset.storage.replication.factor":     "1",
		"status.storage.replication.factor":     "1",
		"config.storage.replication.factor":     "1",
		// Group offsets: checkpoints and their sync into the target's
		// __consumer_offsets (for groups with no active member there).
		"emit.checkpoints.enabled":            "true",
		"emit.checkpoints.interval.seconds":   "1",
		"sync.group.offsets.enabled":          "true",
		"sync.group.offsets.interval.seconds": "1",
		"refresh.groups.interval.seconds":     "1",
		// An offset sync every offset.lag.max records (its default, 100):
		// how exact a translated offset can be.
		"offset.lag.max":                      "100",
		"emit.heartbeats.interval.seconds":    "1",
		"refresh.topics.interval.seconds":     "1",
		"sync.topic.configs.enabled":          "true",
		"sync.topic.configs.interval.seconds": "1",
		"sync.topic.acls.enabled":             "false", // no authorizer on the harness's brokers
		// Worker settings take the target's prefix in dedicated mode.
		// MirrorSourceTask sends its pending offset syncs when the worker
		// commits its offsets: every 60 s by default, which would delay
		// every translated group offset by up to a minute.
		b + ".offset.flush.interval.ms":       "1000",
		"dedicated.mode.enable.internal.rest": "false",
	}
	maps.Copy(cfg, o.Config)
	return cfg
}

// StartMM2 writes o.Dir/mm2.properties and starts MirrorMaker 2. It returns
// once the JVM runs: replication begins some seconds later (the Connect
// herders join their groups, the connectors start and list topics), which
// callers measure by what reaches the target.
func StartMM2(o MM2Options) (*MirrorMaker, error) {
	if len(o.Source) == 0 || len(o.Target) == 0 {
		return nil, errors.New("mm2: need source and target bootstrap addresses")
	}
	if o.Dir == "" {
		return nil, errors.New("mm2: no directory")
	}
	j, err := findJVM()
	if err != nil {
		return nil, fmt.Errorf("mm2: %w", err)
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}
	cfg := MM2Config(o)
	var b strings.Builder
	b.WriteString("# written by internal/kafkatest\n")
	for _, k := range slices.Sorted(maps.Keys(cfg)) {
		fmt.Fprintf(&b, "%s=%s\n", k, cfg[k])
	}
	props := filepath.Join(o.Dir, "mm2.properties")
	if err := os.WriteFile(props, []byte(b.String()), 0o644); err != nil {
		return nil, err
	}
	m := &MirrorMaker{dir: o.Dir, logf: o.Logf}
	if m.logf == nil {
		m.logf = func(string, ...any) {}
	}
	log4j := fmt.Sprintf(`status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = %s
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%%d] %%p %%m (%%c)%%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
logger.reflections.name = org.reflections
logger.reflections.level = ERROR
`, m.LogFile())
	if err := os.WriteFile(filepath.Join(o.Dir, "log4j2.properties"), []byte(log4j), 0o644); err != nil {
		return nil, err
	}
	heap := o.Heap
	if heap == "" {
		heap = MM2DefaultHeap
	}
	args := append(j.args(o.Dir, "-Xmx"+heap), o.JVMArgs...)
	// --clusters: only the herder of the target runs here (MirrorMaker 2's
	// advice: run it in the target's data centre, consuming remotely).
	args = append(args, "-cp", j.classpath, "org.apache.kafka.connect.mirror.MirrorMaker", props, "--clusters", alias(o.TargetAlias, "b"))
	out, err := os.OpenFile(filepath.Join(o.Dir, "stdout.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer out.Close() // the child holds its own copy
	command := o.Command
	if command == nil {
		command = exec.Command
	}
	cmd := command(j.java, args...)
	cmd.Dir = o.Dir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("mm2: start: %w", err)
	}
	m.cmd, m.done = cmd, make(chan struct{})
	go func() { // owned by m: halt waits on done
		_ = cmd.Wait()
		close(m.done)
	}()
	m.logf("kafkatest: MirrorMaker 2 (Apache Kafka %s) started, pid %d, dir %s", version(), cmd.Process.Pid, o.Dir)
	return m, nil
}

// Dir returns MirrorMaker's directory.
func (m *MirrorMaker) Dir() string { return m.dir }

// LogFile returns the path of MirrorMaker's log (log4j's output).
func (m *MirrorMaker) LogFile() string { return filepath.Join(m.dir, "mm2.log") }

// Tail returns the last n lines of the log.
func (m *MirrorMaker) Tail(n int) string { return tail(m.LogFile(), n) }

// PID returns the JVM's process ID, or 0 when it is not running.
func (m *MirrorMaker) PID() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return 0
	}
	return m.cmd.Process.Pid
}

// Exited is closed when the JVM has exited (nil when it is not running).
func (m *MirrorMaker) Exited() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.done
}

// Stop asks MirrorMaker to shut down (SIGTERM: it stops its connectors and
// commits their offsets) and waits; after 30 seconds it kills the JVM.
// Stopping a stopped MirrorMaker does nothing.
func (m *MirrorMaker) Stop() error { return m.halt(syscall.SIGTERM, 30*time.Second) }

// Kill kills the JVM (SIGKILL) and waits until it is gone.
func (m *MirrorMaker) Kill() error { return m.halt(syscall.SIGKILL, 0) }

func (m *MirrorMaker) halt(sig syscall.Signal, grace time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return nil
	}
	pid := m.cmd.Process.Pid
	select {
	case <-m.done:
	default:
		if err := m.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("mm2: signal pid %d: %w", pid, err)
		}
		if grace > 0 {
			select {
			case <-m.done:
			case <-time.After(grace):
				m.logf("kafkatest: MirrorMaker 2 did not stop in %v: killing pid %d", grace, pid)
				_ = m.cmd.Process.Kill()
			}
		}
		<-m.done
	}
	m.logf("kafkatest: MirrorMaker 2 pid %d stopped", pid)
	m.cmd, m.done = nil, nil
	return nil
}

func alias(a, def string) string {
	if a == "" {
		return def
	}
	return a
}
