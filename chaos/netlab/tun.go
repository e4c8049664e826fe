//go:build linux

package netlab

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// tunName is the name of the TUN device in every region's namespace.
const tunName = "lab0"

// openTUN creates a layer-3 TUN device (IFF_TUN|IFF_NO_PI: reads and writes
// are bare IP packets) in the calling thread's network namespace. The
// device is not persistent: it disappears when the returned file is
// closed. The file is non-blocking, so reads wait in the Go runtime's
// poller and Close wakes a blocked Read.
func openTUN(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun %s: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun %s: TUNSETIFF: %w", name, err)
	}
	return os.NewFile(uintptr(fd), "tun:"+name), nil
}
