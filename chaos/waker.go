package chaos

import "time"

// waker is what a Pipe's delivery loop sleeps on. Run alone calls arm and
// wait; schedulers call kick, with Pipe.mu held, when they queue a packet
// due before everything else. close makes wait return false.
type waker interface {
	arm(d time.Duration) // wake after d; d < 0 disarms
	kick()               // wake now
	wait() bool          // sleep until woken; false once closed
	close()
}

// timerWaker is the portable waker: a runtime timer and a kick channel.
// Runtime timers wake up to a millisecond late (the poller sleeps in whole
// milliseconds), so on Linux the Pipe uses timerfdWaker instead.
type timerWaker struct {
	timer *time.Timer
	kicks chan struct{} // capacity 1
	done  chan struct{}
}

func newTimerWaker() *timerWaker {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &timerWaker{timer: t, kicks: make(chan struct{}, 1), done: make(chan struct{})}
}

func (w *timerWaker) arm(d time.Duration) {
	if d < 0 {
		w.timer.Stop()
		return
	}
	w.timer.Reset(d)
}

func (w *timerWaker) kick() {
	select {
	case w.kicks <- struct{}{}:
	default:
	}
}

func (w *timerWaker) wait() bool {
	select {
	case <-w.done:
		w.timer.Stop()
		return false
	case <-w.kicks:
	case <-w.timer.C:
	}
	return true
}

func (w *timerWaker) close() { close(w.done) }
