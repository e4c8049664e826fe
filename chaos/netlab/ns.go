//go:build linux

package netlab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// runLocked runs fn on a goroutine of its own, locked to its OS thread, and
// waits for it. If fn reports keep=false the goroutine exits still locked,
// so the runtime ends the thread instead of reusing it: that is how a
// thread left in a lab namespace (or one whose namespace could not be
// restored) is disposed of. The main thread is never used for this, since
// the runtime parks a locked main thread forever instead of ending it.
func runLocked(fn func() (keep bool, err error)) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		keep, err := fn()
		if keep {
			runtime.UnlockOSThread()
		}
		done <- err
	}()
	return <-done
}

// newNamespace creates an anonymous network namespace and returns an open
// file for it; the namespace lives as long as the file, or sockets and
// processes inside it, do. setup runs on a thread inside the new namespace
// (to create the TUN device and the netlink handle there); that thread is
// then thrown away, so no thread of the process stays behind in it.
func newNamespace(setup func() error) (*os.File, error) {
	var ns *os.File
	err := runLocked(func() (bool, error) {
		// The thread never goes back: keep is false on every path.
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return false, fmt.Errorf("unshare network namespace: %w", err)
		}
		fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return false, fmt.Errorf("open namespace: %w", err)
		}
		ns = os.NewFile(uintptr(fd), "netns")
		if err := setup(); err != nil {
			ns.Close()
			ns = nil
			return false, err
		}
		return false, nil
	})
	return ns, err
}

// inNamespace runs fn on a thread switched into ns, then switches the
// thread back. If switching back fails, the thread is discarded.
func inNamespace(ns *os.File, fn func() error) error {
	return runLocked(func() (bool, error) {
		orig, err := netns.Get()
		if err != nil {
			return false, fmt.Errorf("get thread namespace: %w", err)
		}
		defer orig.Close()
		if err := netns.Set(netns.NsHandle(ns.Fd())); err != nil {
			return true, fmt.Errorf("enter namespace: %w", err)
		}
		fnErr := fn()
		if err := netns.Set(orig); err != nil {
			return false, errors.Join(fnErr, fmt.Errorf("leave namespace (thread discarded): %w", err))
		}
		return true, fnErr
	})
}

// namedDir is where `ip netns` looks for named namespaces.
const namedDir = "/run/netns"

// bindNamed makes ns reachable as `ip netns exec name ...` by bind-mounting
// it at /run/netns/name, like `ip netns attach`. An existing name is an
// error: it is likely left over from a lab that was killed, and
// `ip netns del name` removes it.
func bindNamed(ns *os.File, name string) (string, error) {
	if err := os.MkdirAll(namedDir, 0o755); err != nil {
		return "", fmt.Errorf("named namespace %s: %w", name, err)
	}
	path := filepath.Join(namedDir, name)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return "", fmt.Errorf("named namespace %s already exists (left over from a killed lab? remove it with `ip netns del %s`)", name, name)
		}
		return "", fmt.Errorf("named namespace %s: %w", name, err)
	}
	f.Close()
	src := fmt.Sprintf("/proc/self/fd/%d", ns.Fd())
	if err := unix.Mount(src, path, "none", unix.MS_BIND, ""); err != nil {
		os.Remove(path)
		return "", fmt.Errorf("named namespace %s: bind mount: %w", name, err)
	}
	return path, nil
}

// unbindNamed undoes bindNamed.
func unbindNamed(path string) error {
	var errs []error
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		errs = append(errs, fmt.Errorf("unmount %s: %w", path, err))
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
