// Package amqptest runs a real RabbitMQ node (Debian's rabbitmq-server 3.10
// with its rabbitmq_amqp1_0 plugin) for tests of Meridian's AMQP 1.0 code.
//
// # Use
//
//	b := amqptest.Start(t)   // a node of its own, stopped by t.Cleanup
//	url := b.URL()           // amqp://guest:guest@127.0.0.1:PORT
//	b.Stop()                 // graceful stop (SIGTERM to the node's PID)
//	b.Kill()                 // SIGKILL, as a crash
//	b.Start()                // same data directory, same ports
//
// Each node runs in its own directory (t.TempDir) with its own node name,
// AMQP port, distribution port and epmd (on a free port of its own, started
// by the helper in the foreground so that it is ours to stop), bound to
// 127.0.0.1 only; nothing of a system RabbitMQ service is used or touched.
// NOTIFY_SOCKET (a socket the helper holds) makes Debian's rabbitmq-server
// script exec the Erlang VM instead of running it as a background child of
// a shell, so the PID started (Broker.PID) is the node itself: Stop
// (SIGTERM, a graceful stop), Kill (SIGKILL, a crash) and Pdeathsig reach
// it, and a test binary that dies takes its nodes with it.
// rabbitmq.conf binds the listener to 127.0.0.1 and allows guest from
// there; enabled_plugins names rabbitmq_amqp1_0. Start returns once an AMQP
// 1.0 connection (SASL PLAIN guest/guest) opens. Processes are stopped by
// the PID the helper started, and die with the test binary (Pdeathsig).
//
// Without rabbitmq-server installed Start skips the test and says why;
// under CI=true it fails it. Install it with
//
//	apt-get install -y rabbitmq-server
//
// (.ci/run does). A first start takes about 15 s, a restart about 6 s.
//
// Launch starts a node outside a test (for `meridian bench amqp`): in a
// directory it makes and removes, stopped by the function it returns.
//
// It is a test and benchmark helper: only tests and chaos/lab's
// benchmarks may import it.
package amqptest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	amqp "github.com/Azure/go-amqp"
)

// TB is the part of testing.TB the helper uses; *testing.T and
// *testing.B satisfy it. The package does not import testing, so that
// `meridian bench amqp` (Launch) links it without the testing package.
type TB interface {
	Helper()
	Logf(format string, args ...any)
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
	TempDir() string
	Cleanup(func())
}

// ServerPath is the rabbitmq-server script Start runs. Debian's
// /usr/sbin/rabbitmq-server is a wrapper that switches to the rabbitmq
// user; this one runs the node as the calling user.
const ServerPath = "/usr/lib/rabbitmq/bin/rabbitmq-server"

// Broker is one RabbitMQ node started by Start.
type Broker struct {
	tb   TB                   // nil when launched (Launch)
	logf func(string, ...any) // the test's Logf, or Launch's
	dir  string
	node string
	port int // AMQP
	dist int // Erlang distribution
	epmd int // epmd's port

	mu      sync.Mutex
	server  *exec.Cmd
	serverW chan struct{} // closed when server has been waited for
	epmdCmd *exec.Cmd
	epmdW   chan struct{}
	notify  *net.UnixConn
}

// Available reports whether a RabbitMQ node can be started here, and if
// not, why.
func Available() error {
	if _, err := os.Stat(ServerPath); err != nil {
		return fmt.Errorf("rabbitmq-server is not installed (%s: %w); apt-get install -y rabbitmq-server", ServerPath, err)
	}
	if _, err := exec.LookPath("epmd"); err != nil {
		return fmt.Errorf("epmd (Erlang) is not installed: %w", err)
	}
	return nil
}

// Start starts a RabbitMQ node for the test and waits until it accepts AMQP
// 1.0 connections. It skips the test when RabbitMQ is not installed, or
// fails it under CI=true.
func Start(tb TB) *Broker {
	tb.Helper()
	if err := Available(); err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("amqptest: RabbitMQ is required under CI=true: %v", err)
		}
		tb.Skipf("amqptest: %v", err)
	}
	b, err := newBroker(tb.TempDir(), tb.Logf)
	if err != nil {
		tb.Fatalf("amqptest: %v", err)
	}
	b.tb = tb
	tb.Cleanup(func() {
		b.Stop()
		b.stopEpmd()
	})
	b.Start()
	return b
}

func newBroker(dir string, logf func(string, ...any)) (*Broker, error) {
	b := &Broker{dir: dir, logf: logf}
	var err error
	if b.port, err = freePort(); err == nil {
		if b.dist, err = freePort(); err == nil {
			b.epmd, err = freePort()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("free ports: %w", err)
	}
	b.node = fmt.Sprintf("meridian-%d@localhost", b.port)
	if err := b.writeConfig(); err != nil {
		return nil, err
	}
	return b, nil
}

// Launch starts a node outside a test, in a new temporary directory, and
// returns it with the function that stops it (gracefully) and removes the
// directory. logf may be nil.
func Launch(logf func(string, ...any)) (*Broker, func() error, error) {
	if err := Available(); err != nil {
		return nil, nil, err
	}
	if logf == nil {
		logf = func(string, ...any) {}
	}
	dir, err := os.MkdirTemp("", "meridian-rabbitmq-")
	if err != nil {
		return nil, nil, err
	}
	b, err := newBroker(dir, logf)
	if err == nil {
		err = b.start()
	}
	stop := func() error {
		b.Stop()
		b.stopEpmd()
		return os.RemoveAll(dir)
	}
	if err != nil {
		if b != nil {
			stop()
		} else {
			os.RemoveAll(dir)
		}
		return nil, nil, err
	}
	return b, stop, nil
}

// URL is the broker's AMQP URL with the guest credentials.
func (b *Broker) URL() string { return "amqp://guest:guest@" + b.Addr() }

// Addr is the broker's AMQP address, 127.0.0.1:port.
func (b *Broker) Addr() string { return "127.0.0.1:" + strconv.Itoa(b.port) }

// PID is the running node's process id (0 when stopped).
func (b *Broker) PID() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.server == nil {
		return 0
	}
	return b.server.Process.Pid
}

// Dir is the node's directory (config, mnesia, logs).
func (b *Broker) Dir() string { return b.dir }

func (b *Broker) writeConfig() error {
	for _, d := range []string{"home", "mnesia", "log"} {
		if err := os.MkdirAll(filepath.Join(b.dir, d), 0o755); err != nil {
			return err
		}
	}
	conf := fmt.Sprintf("listeners.tcp.default = 127.0.0.1:%d\nloopback_users = none\n", b.port)
	files := map[string]string{
		"rabbitmq.conf":     conf,
		"enabled_plugins":   "[rabbitmq_amqp1_0].\n",
		"rabbitmq-env.conf": "",
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(b.dir, name), []byte(text), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func (b *Broker) env() []string {
	env := []string{
		"HOME=" + filepath.Join(b.dir, "home"),
		"RABBITMQ_NODENAME=" + b.node,
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		"RABBITMQ_NODE_PORT=" + strconv.Itoa(b.port),
		"RABBITMQ_DIST_PORT=" + strconv.Itoa(b.dist),
		"RABBITMQ_MNESIA_BASE=" + filepath.Join(b.dir, "mnesia"),
		"RABBITMQ_LOG_BASE=" + filepath.Join(b.dir, "log"),
		"RABBITMQ_CONFIG_FILE=" + filepath.Join(b.dir, "rabbitmq.conf"),
		"RABBITMQ_ENABLED_PLUGINS_FILE=" + filepath.Join(b.dir, "enabled_plugins"),
		"RABBITMQ_CONF_ENV_FILE=" + filepath.Join(b.dir, "rabbitmq-env.conf"),
		"RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel inet_dist_use_interface {127,0,0,1}",
		"ERL_EPMD_ADDRESS=127.0.0.1",
		"ERL_EPMD_PORT=" + strconv.Itoa(b.epmd),
		"PATH=/usr/lib/rabbitmq/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		// With NOTIFY_SOCKET set, rabbitmq-server execs the node instead
		// of running it as a background child of a shell: the PID started
		// is then the node's own, so signals (and Pdeathsig, which a fork
		// would clear) reach it. The node sends READY=1 to the socket,
		// which the helper holds.
		"NOTIFY_SOCKET=" + b.notifyPath(),
	}
	if lang := os.Getenv("LANG"); lang != "" {
		env = append(env, "LANG="+lang)
	}
	return env
}

func (b *Broker) notifyPath() string { return filepath.Join(b.dir, "notify.sock") }

// Start (re)starts the node after Stop: same directory, same ports. It
// waits until AMQP 1.0 connections open, and fails the test if they do not
// within 90 s.
func (b *Broker) Start() {
	if b.tb == nil {
		if err := b.start(); err != nil {
			b.logf("amqptest: %v", err)
		}
		return
	}
	b.tb.Helper()
	if err := b.start(); err != nil {
		b.tb.Fatalf("amqptest: %v", err)
	}
}

func (b *Broker) start() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.server != nil {
		return errors.New("node already running")
	}
	if b.notify == nil {
		nc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: b.notifyPath(), Net: "unixgram"})
		if err != nil {
			return fmt.Errorf("notify socket: %w", err)
		}
		b.notify = nc
		go func() { // drain what the node says (READY=1, STATUS=...)
			buf := make([]byte, 4096)
			for {
				if _, err := nc.Read(buf); err != nil {
					return
				}
			}
		}()
	}
	if b.epmdCmd == nil {
		// epmd in the foreground, so that it is a process of ours
		// (rabbitmq-server would otherwise daemonize one nobody owns).
		cmd := exec.Command("epmd", "-port", strconv.Itoa(b.epmd), "-address", "127.0.0.1")
		cmd.Env = b.env()
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start epmd: %w", err)
		}
		b.epmdCmd, b.epmdW = cmd, make(chan struct{})
		go func(w chan struct{}) { cmd.Wait(); close(w) }(b.epmdW)
	}
	out, err := os.OpenFile(filepath.Join(b.dir, "server.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	// The script execs erl, which execs beam.smp (see NOTIFY_SOCKET in
	// env): the PID started is the node's.
	cmd := exec.Command(ServerPath)
	cmd.Env = b.env()
	cmd.Dir = b.dir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	began := time.Now()
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("start %s: %w", ServerPath, err)
	}
	out.Close()
	w := make(chan struct{})
	go func() { cmd.Wait(); close(w) }()
	b.server, b.serverW = cmd, w
	deadline := time.Now().Add(90 * time.Second)
	for {
		select {
		case <-w:
			b.server = nil
			return fmt.Errorf("rabbitmq-server exited during start-up (%s); see %s", cmd.ProcessState, filepath.Join(b.dir, "server.out"))
		default:
		}
		if err := probe(b.Addr()); err == nil {
			b.logf("amqptest: RabbitMQ %s (pid %d) accepts AMQP 1.0 on %s after %s", b.node, cmd.Process.Pid, b.Addr(), time.Since(began).Round(100*time.Millisecond))
			return nil
		} else if time.Now().After(deadline) {
			b.stopLocked()
			return fmt.Errorf("RabbitMQ did not accept AMQP 1.0 on %s within 90 s: %v; see %s", b.Addr(), err, b.dir)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// probe opens and closes an AMQP 1.0 connection with a session.
func probe(addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := amqp.Dial(ctx, "amqp://"+addr, &amqp.ConnOptions{SASLType: amqp.SASLTypePlain("guest", "guest")})
	if err != nil {
		return err
	}
	defer c.Close()
	s, err := c.NewSession(ctx, nil)
	if err != nil {
		return err
	}
	_ = s
	return nil
}

// Stop stops the node gracefully (SIGTERM to its PID; SIGKILL after 30 s)
// and waits for it. It keeps the node's data and its epmd. Safe to call
// when stopped.
func (b *Broker) Stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stopLocked()
}

// Kill stops the node with SIGKILL, as a crash.
func (b *Broker) Kill() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.server == nil {
		return
	}
	b.server.Process.Signal(syscall.SIGKILL)
	<-b.serverW
	b.server = nil
}

func (b *Broker) stopLocked() {
	if b.server == nil {
		return
	}
	b.server.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.serverW:
	case <-time.After(30 * time.Second):
		b.server.Process.Signal(syscall.SIGKILL)
		<-b.serverW
	}
	b.server = nil
}

func (b *Broker) stopEpmd() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.notify != nil {
		b.notify.Close()
		b.notify = nil
	}
	if b.epmdCmd == nil {
		return
	}
	b.epmdCmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.epmdW:
	case <-time.After(5 * time.Second):
		b.epmdCmd.Process.Signal(syscall.SIGKILL)
		<-b.epmdW
	}
	b.epmdCmd = nil
}

// Ctl runs rabbitmqctl against the node (for example
// "set_vm_memory_high_watermark", "0" to raise a memory alarm, which
// blocks publishers) and returns its output.
func (b *Broker) Ctl(args ...string) (string, error) {
	cmd := exec.Command("/usr/lib/rabbitmq/bin/rabbitmqctl", append([]string{"-n", b.node}, args...)...)
	cmd.Env = b.env()
	cmd.Dir = b.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("rabbitmqctl %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// Log returns the tail of the node's log files, for failure messages.
func (b *Broker) Log() string {
	var sb strings.Builder
	files, _ := filepath.Glob(filepath.Join(b.dir, "log", "*.log"))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if len(data) > 4000 {
			data = data[len(data)-4000:]
		}
		fmt.Fprintf(&sb, "== %s\n%s\n", f, data)
	}
	return sb.String()
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
