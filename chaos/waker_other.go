//go:build !linux

package chaos

func newWaker() waker { return newTimerWaker() }
