//go:build linux

package netlab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
)

// ErrUnavailable wraps every reason Check gives.
var ErrUnavailable = errors.New("network lab unavailable")

// Check reports why a lab cannot be built here, or nil if it can: it needs
// root (CAP_NET_ADMIN and CAP_SYS_ADMIN, for namespaces, TUN devices and
// named-namespace mounts), /dev/net/tun, and network namespaces. It
// creates and discards a namespace and a TUN device to be sure.
func Check() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: needs root (running as uid %d)", ErrUnavailable, os.Geteuid())
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return fmt.Errorf("%w: no TUN support: %w", ErrUnavailable, err)
	}
	ns, err := newNamespace(func() error {
		f, err := openTUN(tunName)
		if err != nil {
			return err
		}
		return f.Close()
	})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return ns.Close()
}

// CheckCommand reports whether Command can work: it needs nsenter
// (Debian's util-linux).
func CheckCommand() error {
	if _, err := exec.LookPath("nsenter"); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}
