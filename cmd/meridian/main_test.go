package main

// End-to-end tests of the real meridian binary: TestMain builds it once into
// a temporary directory, and every test runs it as a child process (exit
// status, stdout and stderr are the interface under test).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/internal/golden"
)

// meridianBin is the binary built by TestMain.
var meridianBin string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "meridian-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "TestMain:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	meridianBin = filepath.Join(dir, "meridian")
	goTool, err := exec.LookPath("go")
	if err != nil {
		fmt.Fprintln(os.Stderr, "TestMain: the go tool is needed to build the binary under test:", err)
		return 1
	}
	// The test runs in the package directory, so "." is ./cmd/meridian of
	// the module that is being tested.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, goTool, "build", "-o", meridianBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "TestMain: go build ./cmd/meridian:", err)
		return 1
	}
	return m.Run()
}

// result is a finished run of the binary.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit status %d\n--- stdout:\n%s--- stderr:\n%s", r.code, r.stdout, r.stderr)
}

// meridian runs the binary to completion (at most 60 s) in dir ("" = the
// package directory) with env added to the test's environment.
func meridian(t *testing.T, dir string, env []string, args ...string) result {
	t.Helper()
	return meridianEnv(t, dir, append(os.Environ(), env...), args...)
}

// meridianEnv is meridian with exactly the environment env.
func meridianEnv(t *testing.T, dir string, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, meridianBin, args...)
	cmd.Dir = dir
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Exited():
		r.code = ee.ExitCode()
	default:
		t.Fatalf("meridian %s: %v\n%v", strings.Join(args, " "), err, r)
	}
	return r
}

// child is a long-running meridian process started by a test. Its output
// goes to files in the test's temporary directory, printed if the test
// fails (or always with MERIDIAN_TEST_LOG set). t.Cleanup kills it (by its own PID) if it is still running. Methods
// that can fail take the *testing.T of the (sub)test calling them.
type child struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	stdout string // file paths
	stderr string

	done chan struct{} // closed when the process has exited
	err  error         // from Wait, valid after done
}

var childSeq struct {
	sync.Mutex
	n map[string]int
}

func startChild(t *testing.T, name, dir string, args ...string) *child {
	t.Helper()
	childSeq.Lock()
	if childSeq.n == nil {
		childSeq.n = map[string]int{}
	}
	childSeq.n[name]++
	base := fmt.Sprintf("%s.%d", name, childSeq.n[name])
	childSeq.Unlock()
	logDir := t.TempDir()
	c := &child{t: t, name: base, stdout: filepath.Join(logDir, base+".stdout"), stderr: filepath.Join(logDir, base+".stderr"), done: make(chan struct{})}
	outF, err := os.Create(c.stdout)
	if err != nil {
		t.Fatal(err)
	}
	errF, err := os.Create(c.stderr)
	if err != nil {
		outF.Close()
		t.Fatal(err)
	}
	c.cmd = exec.Command(meridianBin, args...)
	c.cmd.Dir = dir
	c.cmd.Stdout, c.cmd.Stderr = outF, errF
	err = c.cmd.Start()
	outF.Close() // the child has its own copies
	errF.Close()
	if err != nil {
		t.Fatalf("start %s: %v", base, err)
	}
	t.Logf("started %s (pid %d): meridian %s", base, c.cmd.Process.Pid, strings.Join(args, " "))
	go func() {
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		if !c.exited() {
			_ = c.cmd.Process.Kill()
			select {
			case <-c.done:
			case <-time.After(10 * time.Second):
				t.Errorf("%s (pid %d) still running 10 s after SIGKILL", base, c.cmd.Process.Pid)
			}
		}
		if t.Failed() || os.Getenv("MERIDIAN_TEST_LOG") != "" {
			c.dump()
		}
	})
	return c
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

func (c *child) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if c.exited() {
		t.Fatalf("%s: signal %v: already exited (%v)", c.name, sig, c.err)
	}
	if err := c.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%s: signal %v: %v", c.name, sig, err)
	}
}

// wait waits up to within for the child to exit and returns its exit status
// (-1 when killed by a signal). It fails the test on timeout.
func (c *child) wait(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(within):
		t.Fatalf("%s (pid %d) did not exit within %v", c.name, c.cmd.Process.Pid, within)
	}
	return c.cmd.ProcessState.ExitCode()
}

func (c *child) output() (stdout, stderr string) {
	o, _ := os.ReadFile(c.stdout)
	e, _ := os.ReadFile(c.stderr)
	return string(o), string(e)
}

func (c *child) dump() {
	o, e := c.output()
	c.t.Logf("=== %s stdout (%s):\n%s", c.name, c.stdout, o)
	c.t.Logf("=== %s stderr (%s):\n%s", c.name, c.stderr, e)
}

// freeTCPAddr and freeUDPAddr return a loopback address that was free a
// moment ago.
func freeTCPAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func freeUDPAddr(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

// waitFor polls cond every interval until it returns nil, and fails the test
// with the last error if within passes first.
func waitFor(t *testing.T, within, interval time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not done within %v: %v", what, within, err)
		}
		time.Sleep(interval)
	}
}

// checkGolden compares got with the file testdata/name (rewritten with -update).
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	golden.Check(t, filepath.Join("testdata", name), got)
}
