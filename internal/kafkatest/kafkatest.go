package kafkatest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
)

// Version is the Apache Kafka version the harness runs: the newest release
// for which the broker (kafka_2.13), connect-runtime and connect-mirror are
// all published. pom.xml's kafka.version must match (a test checks it).
// MERIDIAN_KAFKA_VERSION overrides it, for the tests and resolve.sh alike.
const Version = "4.3.1"

// DefaultHeap is the broker's maximum Java heap when Options.Heap is empty.
const DefaultHeap = "512m"

// Options say how Start runs each cluster. The zero value is ready to use.
type Options struct {
	// Config holds server.properties entries that replace or extend the
	// harness's defaults (see defaultConfig), for example an authorizer
	// ("authorizer.class.name") or log cleaner settings. Values may contain
	// ${PORT} and ${CONTROLLER_PORT}, replaced by the cluster's ports, so
	// that "listeners" can be redefined. nil means the defaults alone.
	Config map[string]string

	// Heap is the broker's maximum Java heap (-Xmx), such as "384m".
	// Empty means DefaultHeap.
	Heap string

	// JVMArgs are extra java arguments placed after the harness's own, so
	// they win where they conflict: for example "-XX:TieredStopAtLevel=4"
	// for full JIT in benchmarks (the harness uses C1 only, which starts
	// faster). nil means none.
	JVMArgs []string

	// Dir is the directory under which each cluster gets its own
	// subdirectory (cluster-0, cluster-1, ...) with its data, config and
	// logs. Empty means t.TempDir(). A given Dir is left in place after
	// the test.
	Dir string

	// StartTimeout bounds each start or restart, until the broker serves
	// metadata. Zero means 2 minutes.
	StartTimeout time.Duration

	// Users, when not empty, turn on SASL/PLAIN: the client listener
	// (Addr) becomes SASL_PLAINTEXT and accepts these user → password
	// pairs, plus the harness's own super user (AdminUser, with a random
	// password) that Client and the readiness check log in as. The broker
	// talks to itself over a separate PLAINTEXT listener on another
	// loopback port, which clients are never told about. nil means no
	// authentication (PLAINTEXT).
	Users map[string]string

	// Host is the address the client listener binds and advertises; the
	// controller listener (and the inter-broker one with Users) stays on
	// 127.0.0.1 of the broker's network namespace. "": 127.0.0.1. With
	// Command and Dialer it puts a broker on a lab address (chaos/netlab:
	// Lab.Addr, Lab.Command, Lab.DialContext).
	Host string
	// Command builds the command that runs the broker's JVM, for example
	// inside a network namespace (netlab's Lab.Command). The harness sets
	// its directory, output and Pdeathsig; the JVM must be the process
	// started (as nsenter does, which execs it), since Stop and Kill
	// signal that PID. nil: exec.Command.
	Command func(name string, args ...string) *exec.Cmd
	// Dialer is how the harness's own clients (the readiness check,
	// Client) reach the broker, for a Host outside this network namespace.
	// nil: franz-go's default dialer.
	Dialer func(ctx context.Context, network, address string) (net.Conn, error)

	// Authorizer turns on Kafka's StandardAuthorizer: with no ACL a
	// request is denied, except for the super users (AdminUser and the
	// broker's own ANONYMOUS). Grant access with kadm (CreateACLs) as
	// Client's admin. Use it with Users, so that principals have names.
	Authorizer bool
}

// TB is the part of testing.TB the harness uses; *testing.T and
// *testing.B satisfy it. The package does not import testing, so the CLI's
// benchmarks (Launch, StartMM2) link it without the testing package.
type TB interface {
	Helper()
	Cleanup(func())
	TempDir() string
	Failed() bool
	Logf(format string, args ...any)
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
}

// AdminUser is the SASL user the harness creates on clusters with
// Options.Users; it is a super user when Options.Authorizer is set.
const AdminUser = "kafkatest-admin"

// Cluster is one single-node KRaft Apache Kafka cluster: a JVM running a
// combined broker and controller on 127.0.0.1. Its methods are safe for
// concurrent use.
type Cluster struct {
	logf    func(format string, args ...any) // tb.Logf, or Launch's logger
	dir     string
	port    int               // client listener
	cport   int               // controller listener
	iport   int               // inter-broker PLAINTEXT listener when the client one is SASL; 0 otherwise
	users   map[string]string // SASL/PLAIN user → password, AdminUser included; nil: no SASL
	jvm     jvm
	host    string                                                            // client listener's address
	command func(name string, args ...string) *exec.Cmd                       // Options.Command, or exec.Command
	dialer  func(ctx context.Context, network, addr string) (net.Conn, error) // Options.Dialer; nil: default
	args    []string                                                          // java arguments to run the broker
	timeout time.Duration

	mu   sync.Mutex
	cmd  *exec.Cmd     // nil when not running
	done chan struct{} // closed when cmd has exited and been reaped
}

// Start starts n clusters at once and returns when every one serves
// metadata. Clean-up registered with tb stops every JVM it started (by PID);
// if the test failed it logs the tail of each broker's log first.
//
// When java (17 or newer) or the resolved jars are missing, Start skips the
// test and says why; with CI=true in the environment it fails it instead.
func Start(tb TB, n int, opts Options) []*Cluster {
	tb.Helper()
	if n < 1 {
		tb.Fatalf("kafkatest: start %d clusters: need at least one", n)
	}
	j, err := findJVM()
	if err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("kafkatest: real Apache Kafka is required under CI=true: %v", err)
		}
		tb.Skipf("kafkatest: real Apache Kafka unavailable: %v", err)
	}
	parent := opts.Dir
	if parent == "" {
		parent = tb.TempDir() // registered before the JVMs' clean-up, so removed after it
	}
	clusters := make([]*Cluster, n)
	for i := range clusters {
		c, err := newCluster(j, parent, i, opts, tb.Logf)
		if err != nil {
			tb.Fatalf("kafkatest: %v", err)
		}
		clusters[i] = c
		tb.Cleanup(func() {
			if tb.Failed() {
				tb.Logf("kafkatest: %s, last lines of %s:\n%s", c.Addr(), c.LogFile(), tail(c.LogFile(), 40))
			}
			if err := c.Kill(); err != nil {
				tb.Errorf("kafkatest: %v", err)
			}
		})
	}
	if err := setUpAll(clusters, opts); err != nil {
		tb.Fatalf("kafkatest: %v", err)
	}
	return clusters
}

// Launch is Start for programs that have no TB: the benchmarks of
// cmd/meridian (`meridian bench mm2`, `bench mirror --kafka real`). It
// returns an error where Start would skip or fail, logs through logf (nil:
// nowhere), and leaves clean-up to the caller: stop kills every JVM it
// started (by PID) and removes the directory Launch made when opts.Dir is
// empty. The JVMs die with the calling process too (Pdeathsig). On error
// nothing is left running.
func Launch(n int, opts Options, logf func(format string, args ...any)) (clusters []*Cluster, stop func() error, err error) {
	if n < 1 {
		return nil, nil, fmt.Errorf("kafkatest: launch %d clusters: need at least one", n)
	}
	if logf == nil {
		logf = func(string, ...any) {}
	}
	j, err := findJVM()
	if err != nil {
		return nil, nil, fmt.Errorf("kafkatest: real Apache Kafka unavailable: %w", err)
	}
	parent, made := opts.Dir, false
	if parent == "" {
		if parent, err = os.MkdirTemp("", "meridian-kafka-"); err != nil {
			return nil, nil, err
		}
		made = true
	}
	stop = func() error {
		var errs []error
		for _, c := range clusters {
			if c != nil {
				errs = append(errs, c.Kill())
			}
		}
		if made {
			errs = append(errs, os.RemoveAll(parent))
		}
		return errors.Join(errs...)
	}
	clusters = make([]*Cluster, n)
	for i := range clusters {
		if clusters[i], err = newCluster(j, parent, i, opts, logf); err != nil {
			return nil, nil, errors.Join(fmt.Errorf("kafkatest: %w", err), stop())
		}
	}
	if err := setUpAll(clusters, opts); err != nil {
		return nil, nil, errors.Join(fmt.Errorf("kafkatest: %w", err), stop())
	}
	return clusters, stop, nil
}

func newCluster(j jvm, parent string, i int, opts Options, logf func(string, ...any)) (*Cluster, error) {
	c := &Cluster{logf: logf, dir: filepath.Join(parent, "cluster-"+strconv.Itoa(i)), jvm: j, timeout: opts.StartTimeout,
		host: opts.Host, command: opts.Command, dialer: opts.Dialer}
	if c.host == "" {
		c.host = "127.0.0.1"
	}
	if c.command == nil {
		c.command = exec.Command
	}
	if c.timeout == 0 {
		c.timeout = 2 * time.Minute
	}
	if len(opts.Users) > 0 {
		var err error
		if c.users, err = withAdmin(opts.Users); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// setUpAll sets the clusters up in parallel.
func setUpAll(clusters []*Cluster, opts Options) error {
	errs := make([]error, len(clusters))
	var wg sync.WaitGroup
	for i, c := range clusters {
		wg.Go(func() { errs[i] = c.setUp(opts) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// setUp picks ports, writes the config, formats the storage and starts the
// broker. A port taken between picking and binding is retried with new ones.
func (c *Cluster) setUp(opts Options) error {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if err = os.RemoveAll(c.dir); err != nil {
			return err
		}
		if err = os.MkdirAll(c.dir, 0o755); err != nil {
			return err
		}
		var ports []int
		if ports, err = freePorts(3); err != nil {
			return err
		}
		c.port, c.cport = ports[0], ports[1]
		if c.users != nil {
			c.iport = ports[2]
		}
		if err = c.writeConfig(opts); err != nil {
			return err
		}
		if err = c.format(); err != nil {
			return err
		}
		if err = c.start(); err == nil || !strings.Contains(tail(c.LogFile(), 200), "Address already in use") {
			return err
		}
	}
	return err
}

// Bootstrap returns the seed brokers for clients: the one broker's address.
func (c *Cluster) Bootstrap() []string { return []string{c.Addr()} }

// Addr returns the broker's client address, host:port (host is
// Options.Host, 127.0.0.1 by default). It stays the same across restarts.
func (c *Cluster) Addr() string { return net.JoinHostPort(c.host, strconv.Itoa(c.port)) }

// Dir returns the cluster's directory: server.properties, data/, server.log.
func (c *Cluster) Dir() string { return c.dir }

// LogFile returns the path of the broker's log (log4j's output).
func (c *Cluster) LogFile() string { return filepath.Join(c.dir, "server.log") }

// PID returns the JVM's process ID, or 0 when it is not running.
func (c *Cluster) PID() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return 0
	}
	return c.cmd.Process.Pid
}

// Client returns a franz-go client seeded with the cluster (logged in as
// AdminUser when the cluster has SASL users), closed when the test ends.
// opts come after these, so they may add to or override them.
func (c *Cluster) Client(tb TB, opts ...kgo.Opt) *kgo.Client {
	tb.Helper()
	cl, err := kgo.NewClient(append(c.adminOpts(), opts...)...)
	if err != nil {
		tb.Fatalf("kafkatest: client for %s: %v", c.Addr(), err)
	}
	tb.Cleanup(cl.Close)
	return cl
}

// ClientAs is Client logged in as user (one of Options.Users) instead of
// AdminUser. franz-go tries SASL mechanisms in the order given, so adding
// SASL(user) to Client's options would still log in as the admin.
func (c *Cluster) ClientAs(tb TB, user string, opts ...kgo.Opt) *kgo.Client {
	tb.Helper()
	login := c.SASL(user)
	if login == nil {
		tb.Fatalf("kafkatest: %s has no SASL user %q", c.Addr(), user)
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.Bootstrap()...), login}, opts...)...)
	if err != nil {
		tb.Fatalf("kafkatest: client for %s as %s: %v", c.Addr(), user, err)
	}
	tb.Cleanup(cl.Close)
	return cl
}

// SASL returns the client option that logs in as user with SASL/PLAIN, or
// nil when the cluster has no SASL (user unknown included: a test that
// wants a failed login sets the mechanism itself).
func (c *Cluster) SASL(user string) kgo.Opt {
	pass, ok := c.users[user]
	if !ok {
		return nil
	}
	return kgo.SASL(plain.Auth{User: user, Pass: pass}.AsMechanism())
}

// Password returns user's SASL/PLAIN password ("" if there is none), for
// clients configured by hand, such as a gateway's topology.
func (c *Cluster) Password(user string) string { return c.users[user] }

// adminOpts seed a client with the cluster, logged in as AdminUser if the
// cluster has SASL.
func (c *Cluster) adminOpts() []kgo.Opt {
	opts := []kgo.Opt{kgo.SeedBrokers(c.Bootstrap()...)}
	if c.dialer != nil {
		opts = append(opts, kgo.Dialer(c.dialer))
	}
	if o := c.SASL(AdminUser); o != nil {
		opts = append(opts, o)
	}
	return opts
}

// withAdmin copies users and adds AdminUser with a random password.
func withAdmin(users map[string]string) (map[string]string, error) {
	out := maps.Clone(users)
	if _, ok := out[AdminUser]; ok {
		return nil, fmt.Errorf("options: user %q is the harness's own", AdminUser)
	}
	for u, p := range out {
		if u == "" || strings.ContainsAny(u+p, "\"\\\n= ") {
			return nil, fmt.Errorf("options: SASL user %q: names and passwords must be non-empty and free of quotes, backslashes, '=', spaces and newlines", u)
		}
	}
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	out[AdminUser] = base64.RawURLEncoding.EncodeToString(b[:])
	return out, nil
}

// Stop shuts the broker down cleanly (SIGTERM) and waits for the JVM to
// exit; after 30 seconds it kills it. Stopping a stopped cluster does
// nothing.
func (c *Cluster) Stop() error { return c.halt(syscall.SIGTERM, 30*time.Second) }

// Kill kills the JVM (SIGKILL), as a crash would, and waits until it is
// gone. Killing a stopped cluster does nothing.
func (c *Cluster) Kill() error { return c.halt(syscall.SIGKILL, 0) }

// Restart stops the broker if it runs (cleanly) and starts it again on the
// same data directory and ports, returning when it serves metadata.
func (c *Cluster) Restart() error {
	if err := c.Stop(); err != nil {
		return err
	}
	return c.start()
}

func (c *Cluster) halt(sig syscall.Signal, grace time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return nil
	}
	select {
	case <-c.done: // it exited by itself
	default:
		if err := c.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("signal %s (pid %d): %w", c.Addr(), c.cmd.Process.Pid, err)
		}
		if grace > 0 {
			select {
			case <-c.done:
			case <-time.After(grace):
				c.logf("kafkatest: %s did not stop in %v: killing pid %d", c.Addr(), grace, c.cmd.Process.Pid)
				_ = c.cmd.Process.Kill()
			}
		}
		<-c.done
	}
	c.cmd, c.done = nil, nil
	return nil
}

// start runs the JVM and waits until the broker serves metadata.
func (c *Cluster) start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd != nil {
		return fmt.Errorf("start %s: already running (pid %d)", c.Addr(), c.cmd.Process.Pid)
	}
	out, err := os.OpenFile(filepath.Join(c.dir, "stdout.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer out.Close() // the child holds its own copy
	cmd := c.command(c.jvm.java, c.args...)
	cmd.Dir = c.dir
	cmd.Stdout, cmd.Stderr = out, out
	// Should the test binary die without clean-up (a -timeout panic),
	// the kernel kills the JVM rather than leaving it running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	began := time.Now()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", c.Addr(), err)
	}
	done := make(chan struct{})
	go func() { // owned by the Cluster: halt waits on done
		_ = cmd.Wait()
		close(done)
	}()
	c.cmd, c.done = cmd, done
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	if err := waitReady(ctx, c.adminOpts(), done); err != nil {
		_ = cmd.Process.Kill()
		<-done
		c.cmd, c.done = nil, nil
		return fmt.Errorf("start %s (dir %s): %w; last log lines:\n%s", c.Addr(), c.dir, err, tail(c.LogFile(), 20))
	}
	c.logf("kafkatest: Apache Kafka %s at %s ready in %v (pid %d, dir %s)", version(), c.Addr(), time.Since(began).Round(time.Millisecond), cmd.Process.Pid, c.dir)
	return nil
}

// waitReady polls until the broker answers metadata with itself registered
// and a controller, the process exits, or ctx ends.
func waitReady(ctx context.Context, seed []kgo.Opt, exited <-chan struct{}) error {
	cl, err := kgo.NewClient(append(seed, kgo.DialTimeout(time.Second), kgo.RetryTimeout(time.Second))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	var last error
	for {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		m, err := adm.BrokerMetadata(actx)
		cancel()
		switch {
		case err != nil:
			last = err
		case len(m.Brokers) == 0 || m.Controller < 0:
			last = errors.New("no broker or controller in metadata yet")
		default:
			return nil
		}
		select {
		case <-exited:
			return errors.New("the JVM exited before the broker was ready")
		case <-ctx.Done():
			return fmt.Errorf("not ready: %w (last: %v)", ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// defaultConfig is a single-node KRaft cluster kept small: internal topics
// with one replica and few partitions, few threads, no rebalance delay.
func (c *Cluster) defaultConfig() map[string]string {
	return map[string]string{
		"process.roles":                                    "broker,controller",
		"node.id":                                          "1",
		"controller.quorum.voters":                         "1@127.0.0.1:${CONTROLLER_PORT}",
		"listeners":                                        "PLAINTEXT://" + c.host + ":${PORT},CONTROLLER://127.0.0.1:${CONTROLLER_PORT}",
		"advertised.listeners":                             "PLAINTEXT://" + c.host + ":${PORT}",
		"controller.listener.names":                        "CONTROLLER",
		"inter.broker.listener.name":                       "PLAINTEXT",
		"listener.security.protocol.map":                   "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL",
		"log.dirs":                                         filepath.Join(c.dir, "data"),
		"num.partitions":                                   "1",
		"default.replication.factor":                       "1",
		"min.insync.replicas":                              "1",
		"offsets.topic.replication.factor":                 "1",
		"offsets.topic.num.partitions":                     "4",
		"transaction.state.log.replication.factor":         "1",
		"transaction.state.log.min.isr":                    "1",
		"transaction.state.log.num.partitions":             "4",
		"share.coordinator.state.topic.replication.factor": "1",
		"share.coordinator.state.topic.min.isr":            "1",
		// After a SIGKILL the controller keeps the dead incarnation's
		// registration until its session expires (9 s by default), and the
		// restarted broker waits that long to register.
		"broker.session.timeout.ms":         "3000",
		"broker.heartbeat.interval.ms":      "500",
		"group.initial.rebalance.delay.ms":  "0",
		"num.network.threads":               "2",
		"num.io.threads":                    "2",
		"num.recovery.threads.per.data.dir": "1",
		"background.threads":                "2",
		"log.cleaner.threads":               "1",
		"log.cleaner.dedupe.buffer.size":    strconv.Itoa(8 << 20),
	}
}

// saslConfig moves clients to a SASL_PLAINTEXT listener on the client port
// with PLAIN and the cluster's users; the broker keeps a PLAINTEXT listener
// for itself (inter-broker requests such as transaction markers).
func (c *Cluster) saslConfig(cfg map[string]string) {
	if c.users == nil {
		return
	}
	cfg["listeners"] = "SASL_PLAINTEXT://" + c.host + ":${PORT},PLAINTEXT://127.0.0.1:" + strconv.Itoa(c.iport) + ",CONTROLLER://127.0.0.1:${CONTROLLER_PORT}"
	cfg["advertised.listeners"] = "SASL_PLAINTEXT://" + c.host + ":${PORT},PLAINTEXT://127.0.0.1:" + strconv.Itoa(c.iport)
	cfg["sasl.enabled.mechanisms"] = "PLAIN"
	cfg["listener.name.sasl_plaintext.sasl.enabled.mechanisms"] = "PLAIN"
	var jaas strings.Builder
	jaas.WriteString("org.apache.kafka.common.security.plain.PlainLoginModule required")
	for _, u := range slices.Sorted(maps.Keys(c.users)) {
		fmt.Fprintf(&jaas, " user_%s=\"%s\"", u, c.users[u])
	}
	jaas.WriteString(";")
	cfg["listener.name.sasl_plaintext.plain.sasl.jaas.config"] = jaas.String()
}

// authorizerConfig turns on the StandardAuthorizer with the harness's
// admin and the broker itself (ANONYMOUS on PLAINTEXT) as super users.
func authorizerConfig(cfg map[string]string, on bool) {
	if !on {
		return
	}
	cfg["authorizer.class.name"] = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
	cfg["super.users"] = "User:ANONYMOUS;User:" + AdminUser
	cfg["allow.everyone.if.no.acl.found"] = "false"
}

func (c *Cluster) writeConfig(opts Options) error {
	cfg := c.defaultConfig()
	c.saslConfig(cfg)
	authorizerConfig(cfg, opts.Authorizer)
	maps.Copy(cfg, opts.Config)
	expand := strings.NewReplacer("${PORT}", strconv.Itoa(c.port), "${CONTROLLER_PORT}", strconv.Itoa(c.cport))
	var b strings.Builder
	b.WriteString("# written by internal/kafkatest\n")
	for _, k := range slices.Sorted(maps.Keys(cfg)) {
		fmt.Fprintf(&b, "%s=%s\n", k, expand.Replace(cfg[k]))
	}
	if err := os.WriteFile(filepath.Join(c.dir, "server.properties"), []byte(b.String()), 0o644); err != nil {
		return err
	}
	log4j := fmt.Sprintf(`status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = %s
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%%d] %%p %%m (%%c)%%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka-request.name = kafka.request.logger
logger.kafka-request.level = WARN
`, c.LogFile())
	if err := os.WriteFile(filepath.Join(c.dir, "log4j2.properties"), []byte(log4j), 0o644); err != nil {
		return err
	}
	heap := opts.Heap
	if heap == "" {
		heap = DefaultHeap
	}
	c.args = append(c.jvm.args(c.dir, "-Xmx"+heap), opts.JVMArgs...)
	c.args = append(c.args, "-cp", c.jvm.classpath, "kafka.Kafka", filepath.Join(c.dir, "server.properties"))
	return nil
}

// args are the java options every JVM of the harness gets: a small
// footprint (serial GC, C1 only), the class-data-sharing archive if there is
// one, and log4j writing to the cluster's log.
func (j jvm) args(dir, heap string) []string {
	var cds []string
	if j.archive != "" {
		cds = []string{"-XX:SharedArchiveFile=" + j.archive} // a stale archive is ignored, with a warning in stdout.log
	}
	return append(cds,
		"-Xms32m", heap,
		"-XX:+UseSerialGC",
		"-XX:TieredStopAtLevel=1",
		"-XX:MaxMetaspaceSize=256m",
		"-Djava.awt.headless=true",
		"-Djava.net.preferIPv4Stack=true",
		"-Dlog4j2.configurationFile="+filepath.Join(dir, "log4j2.properties"),
		"-Dkafka.logs.dir="+dir,
	)
}

// format runs kafka-storage format (kafka.tools.StorageTool in 4.x) with a
// fresh cluster ID.
func (c *Cluster) format() error {
	id, err := clusterID()
	if err != nil {
		return err
	}
	args := append(c.jvm.args(c.dir, "-Xmx128m"), "-cp", c.jvm.classpath, "kafka.tools.StorageTool",
		"format", "--cluster-id", id, "--config", filepath.Join(c.dir, "server.properties"))
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.jvm.java, args...)
	cmd.Dir = c.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("format storage in %s: %w: %s", c.dir, err, bytes.TrimSpace(out))
	}
	return nil
}

// clusterID returns a random Kafka Uuid in its base64 form. Like Kafka's
// Uuid.randomUuid it never starts with '-', which kafka-storage's argument
// parser would take for an option (one start in 64 failed so).
func clusterID() (string, error) {
	for {
		var b [16]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", err
		}
		if id := base64.RawURLEncoding.EncodeToString(b[:]); id[0] != '-' {
			return id, nil
		}
	}
}

// freePorts returns n distinct free TCP ports on 127.0.0.1.
func freePorts(n int) ([]int, error) {
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pick a free port: %w", err)
		}
		defer l.Close() // held until all are picked, so they differ
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports, nil
}

// tail returns the last n lines of the file at path, or why it cannot.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func version() string {
	if v := os.Getenv("MERIDIAN_KAFKA_VERSION"); v != "" {
		return v
	}
	return Version
}

// CacheDir returns where resolve.sh puts the jars:
// $MERIDIAN_KAFKA_CACHE, or $HOME/.cache/meridian/kafka-<version>.
func CacheDir() (string, error) {
	if d := os.Getenv("MERIDIAN_KAFKA_CACHE"); d != "" {
		return d, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(home, ".cache", "meridian", "kafka-"+version()), nil
}

// jvm is what every JVM of the harness runs with.
type jvm struct {
	java      string
	classpath string
	archive   string // class-data-sharing archive made by resolve.sh; empty if none
}

var findJVM = sync.OnceValues(func() (jvm, error) {
	java, err := exec.LookPath("java")
	if err != nil {
		return jvm{}, fmt.Errorf("no java on PATH (Debian: apt-get install openjdk-17-jre-headless)")
	}
	out, err := exec.Command(java, "-version").CombinedOutput()
	if err != nil {
		return jvm{}, fmt.Errorf("%s -version: %w: %s", java, err, bytes.TrimSpace(out))
	}
	m := regexp.MustCompile(`version "(\d+)`).FindSubmatch(out)
	if m == nil {
		return jvm{}, fmt.Errorf("%s -version: no version in %q", java, bytes.TrimSpace(out))
	}
	if v, _ := strconv.Atoi(string(m[1])); v < 17 {
		return jvm{}, fmt.Errorf("%s is Java %d; Apache Kafka %s needs 17 or newer", java, v, version())
	}
	dir, err := CacheDir()
	if err != nil {
		return jvm{}, err
	}
	cp, err := os.ReadFile(filepath.Join(dir, "classpath"))
	if err != nil || len(bytes.TrimSpace(cp)) == 0 {
		return jvm{}, fmt.Errorf("no Apache Kafka %s jars in %s: run internal/kafkatest/resolve.sh", version(), dir)
	}
	for _, jar := range strings.Split(string(bytes.TrimSpace(cp)), ":") {
		if _, err := os.Stat(jar); err != nil {
			return jvm{}, fmt.Errorf("classpath in %s: %w: run internal/kafkatest/resolve.sh again", dir, err)
		}
	}
	j := jvm{java: java, classpath: string(bytes.TrimSpace(cp))}
	if a := filepath.Join(dir, "broker.jsa"); fileExists(a) {
		j.archive = a
	}
	return j, nil
})

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// Runtime returns the java executable and the classpath of the resolved
// jars (broker and MirrorMaker 2), or why real Kafka cannot run here.
func Runtime() (java, classpath string, err error) {
	j, err := findJVM()
	return j.java, j.classpath, err
}
