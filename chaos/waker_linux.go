package chaos

import (
	"errors"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// timerfdWaker sleeps on a Linux timerfd registered with the runtime's
// poller: its expiry makes the poller's epoll_wait return at once, so a
// delivery is tens of microseconds late rather than up to a millisecond
// as with a runtime timer. Closing the file wakes a blocked wait.
type timerfdWaker struct {
	f  *os.File
	rc syscall.RawConn
}

// newWaker returns a timerfd waker, or a timer waker if the kernel refuses
// a timerfd.
func newWaker() waker {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return newTimerWaker()
	}
	f := os.NewFile(uintptr(fd), "timerfd")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return newTimerWaker()
	}
	return &timerfdWaker{f: f, rc: rc}
}

func (w *timerfdWaker) set(d time.Duration) {
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(d))}
	// Control fails harmlessly once the file is closed.
	_ = w.rc.Control(func(fd uintptr) { _ = unix.TimerfdSettime(int(fd), 0, &spec, nil) })
}

func (w *timerfdWaker) arm(d time.Duration) {
	if d < 0 {
		w.set(0) // disarm
		return
	}
	w.set(max(d, 1)) // a zero value would disarm
}

func (w *timerfdWaker) kick() { w.set(1) }

func (w *timerfdWaker) wait() bool {
	var buf [8]byte // the expiry count
	_, err := w.f.Read(buf[:])
	if errors.Is(err, os.ErrClosed) {
		return false
	}
	if err != nil {
		time.Sleep(time.Millisecond) // unexpected; do not spin
	}
	return true
}

func (w *timerfdWaker) close() { w.f.Close() }
