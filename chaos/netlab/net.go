//go:build linux

package netlab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrOutsideLab is returned for an address that is neither in the lab's
// range (Prefix) nor loopback: lab code never reaches anywhere else.
var ErrOutsideLab = errors.New("address outside the lab (198.18.0.0/15 or loopback only)")

// ErrUnknownRegion is returned for a region the lab does not have.
var ErrUnknownRegion = errors.New("unknown region")

// Do runs fn on an OS thread switched into the region's network namespace
// and waits for it. Sockets fn creates stay in that namespace for their
// whole life, wherever they are used afterwards. The thread is switched
// back afterwards, or discarded if that fails; fn must not start
// goroutines that expect to be in the namespace (they run on other
// threads), so resolve no host names in it either.
func (l *Lab) Do(region string, fn func() error) error {
	r := l.byName[region]
	if r == nil {
		return fmt.Errorf("region %q: %w", region, ErrUnknownRegion)
	}
	// A duplicate of the namespace descriptor, so that Close may run
	// meanwhile without pulling it from under us.
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return fmt.Errorf("region %s: %w", region, net.ErrClosed)
	}
	fd, err := unix.FcntlInt(r.ns.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	l.mu.Unlock()
	if err != nil {
		return fmt.Errorf("region %s: %w", region, err)
	}
	ns := os.NewFile(uintptr(fd), "netns")
	defer ns.Close()
	return inNamespace(ns, fn)
}

// Listen is net.Listen in the region's namespace. The host must be empty,
// unspecified, loopback or a lab address, such as Addr(region).
func (l *Lab) Listen(region, network, address string) (net.Listener, error) {
	if err := checkListen(address); err != nil {
		return nil, fmt.Errorf("listen %s %s in %s: %w", network, address, region, err)
	}
	var ln net.Listener
	err := l.Do(region, func() (err error) {
		lc := net.ListenConfig{Control: l.tcpControl}
		ln, err = lc.Listen(context.Background(), network, address)
		return err
	})
	return ln, err
}

// ListenPacket is net.ListenPacket in the region's namespace; the address
// rules are those of Listen.
func (l *Lab) ListenPacket(region, network, address string) (net.PacketConn, error) {
	if err := checkListen(address); err != nil {
		return nil, fmt.Errorf("listen %s %s in %s: %w", network, address, region, err)
	}
	var pc net.PacketConn
	err := l.Do(region, func() (err error) {
		pc, err = net.ListenPacket(network, address)
		return err
	})
	return pc, err
}

// ListenFn returns a listen function for the region that keeps the port
// it is asked for but always binds the region's address: pass it to
// kfake.ListenFn, which asks for 127.0.0.1:port, to put a Kafka cluster in
// the region.
func (l *Lab) ListenFn(region string) func(network, address string) (net.Listener, error) {
	return func(network, address string) (net.Listener, error) {
		_, port, err := net.SplitHostPort(address)
		if err != nil {
			return nil, fmt.Errorf("listen %s %s in %s: %w", network, address, region, err)
		}
		return l.Listen(region, network, net.JoinHostPort(l.Addr(region).String(), port))
	}
}

// DialContext returns a dial function for code in the region, usable as a
// net.Dialer's DialContext (franz-go's kgo.Dialer, an http.Transport, a
// gRPC dialer). It dials with a plain net.Dialer inside the namespace.
// Only literal addresses in the lab's range or on loopback are dialed;
// anything else fails with ErrOutsideLab.
func (l *Lab) DialContext(region string) func(ctx context.Context, network, address string) (net.Conn, error) {
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		if err := checkDial(address); err != nil {
			return nil, &net.OpError{Op: "dial", Net: network, Err: fmt.Errorf("%s from %s: %w", address, region, err)}
		}
		var c net.Conn
		err := l.Do(region, func() (err error) {
			d := net.Dialer{Control: l.tcpControl}
			c, err = d.DialContext(ctx, network, address)
			return err
		})
		return c, err
	}
}

// tcpControl sets Options.TCPCongestion on a TCP socket.
func (l *Lab) tcpControl(network, _ string, c syscall.RawConn) error {
	if l.tcpCC == "" || !strings.HasPrefix(network, "tcp") {
		return nil
	}
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION, l.tcpCC)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("TCP congestion control %q: %w", l.tcpCC, serr)
	}
	return nil
}

// Command returns a command that runs name with args inside the region's
// network namespace, through nsenter (util-linux), which gets the
// namespace as its file descriptor 3: ExtraFiles[0] is the namespace, so
// append further files after it. Start the command before closing the lab.
func (l *Lab) Command(region, name string, args ...string) *exec.Cmd {
	r := l.byName[region]
	cmd := exec.Command("nsenter", append([]string{"--net=/proc/self/fd/3", "--", name}, args...)...)
	if r == nil || r.ns == nil {
		cmd.Err = fmt.Errorf("command %s in %q: %w", name, region, ErrUnknownRegion)
		return cmd
	}
	cmd.ExtraFiles = []*os.File{r.ns}
	return cmd
}

func splitAddr(address string) (netip.Addr, bool, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return netip.Addr{}, false, err
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil && port != "" {
		return netip.Addr{}, false, fmt.Errorf("port %q: %w", port, err)
	}
	if host == "" {
		return netip.Addr{}, true, nil
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false, fmt.Errorf("host %q is not an IP address (lab code resolves no names): %w", host, ErrOutsideLab)
	}
	return a.Unmap().WithZone(""), false, nil
}

func checkDial(address string) error {
	a, empty, err := splitAddr(address)
	switch {
	case err != nil:
		return err
	case empty:
		return fmt.Errorf("no host: %w", ErrOutsideLab)
	case !Prefix.Contains(a) && !a.IsLoopback():
		return ErrOutsideLab
	}
	return nil
}

func checkListen(address string) error {
	a, empty, err := splitAddr(address)
	if err != nil || empty || a.IsUnspecified() || a.IsLoopback() || Prefix.Contains(a) {
		return err
	}
	return ErrOutsideLab
}
