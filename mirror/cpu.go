package mirror

import (
	"runtime"
	"sync"
	"time"
)

// cpuMeter tells how busy the process's CPUs are, over windows of at least
// cpuWindow: the share of runtime.NumCPU() the process used. A sink merges
// small batches (CPU spent to save produce round trips) only while CPUs
// are to spare.
type cpuMeter struct {
	mu       sync.Mutex
	at       time.Time
	cpu      time.Duration
	busy     float64 // over the last complete window; -1: unknown
	measured bool
}

const cpuWindow = 500 * time.Millisecond

var processCPU = &cpuMeter{busy: -1}

// share returns the busy share of the last window (0..1), or -1 when the
// platform cannot tell.
func (m *cpuMeter) share() float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	if m.measured && now.Sub(m.at) < cpuWindow {
		return m.busy
	}
	cpu, ok := processCPUTime()
	if !ok {
		return -1
	}
	if m.measured {
		m.busy = float64(cpu-m.cpu) / float64(now.Sub(m.at)) / float64(runtime.NumCPU())
	}
	m.at, m.cpu, m.measured = now, cpu, true
	return m.busy
}
