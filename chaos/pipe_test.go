package chaos

import (
	"encoding/binary"
	"slices"
	"sync"
	"testing"
	"time"
)

// pipeRecorder collects what a Pipe delivers.
type pipeRecorder struct {
	mu   sync.Mutex
	seqs []uint32
	at   []time.Time
}

func (r *pipeRecorder) send(_ struct{}, b []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seqs = append(r.seqs, binary.BigEndian.Uint32(b))
	r.at = append(r.at, time.Now())
	return nil
}

func (r *pipeRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seqs)
}

func startPipe(t *testing.T, p *Profile) (*Pipe[struct{}], *pipeRecorder) {
	t.Helper()
	im, err := NewImpairment(p, Up, 1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	rec := &pipeRecorder{}
	pp := NewPipe(im, rec.send)
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { pp.Run(quit) })
	t.Cleanup(func() {
		close(quit)
		wg.Wait()
	})
	return pp, rec
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestPipeDeliversInOrderOnTime(t *testing.T) {
	const n = 200
	const delay = 5 * time.Millisecond
	pp, rec := startPipe(t, &Profile{Name: "t", Up: Params{Delay: delay}})
	sent := make([]time.Time, n)
	b := make([]byte, 100)
	for i := range n {
		binary.BigEndian.PutUint32(b, uint32(i))
		sent[i] = time.Now()
		pp.Forward(struct{}{}, b, len(b))
		if i%10 == 0 {
			time.Sleep(200 * time.Microsecond)
		}
	}
	waitFor(t, "all packets", func() bool { return rec.count() == n })
	rec.mu.Lock()
	defer rec.mu.Unlock()
	late := make([]time.Duration, n)
	for i, s := range rec.seqs {
		if s != uint32(i) {
			t.Fatalf("delivery %d is packet %d: out of order", i, s)
		}
		d := rec.at[i].Sub(sent[i])
		if d < delay {
			t.Errorf("packet %d delivered after %v, before its delay %v", i, d, delay)
		}
		late[i] = d - delay
	}
	slices.Sort(late)
	t.Logf("lateness: median %v, p99 %v", late[n/2], late[n*99/100])
	if late[n/2] > 2*time.Millisecond {
		t.Errorf("median lateness %v, want under 2ms", late[n/2])
	}
	st := pp.Stats()
	if st.Received != n || st.Packets != n || st.Bytes != n*100 || st.InFlight != 0 {
		t.Errorf("stats %+v, want %d received and delivered", st, n)
	}
}

// A packet due at once must not overtake an earlier one still waiting.
func TestPipeDueNowWaitsBehindEarlier(t *testing.T) {
	pp, rec := startPipe(t, &Profile{Name: "t", Up: Params{Rate: 1_000_000}}) // 1 kB = 8 ms
	b := make([]byte, 1000)
	for i := range 5 {
		binary.BigEndian.PutUint32(b, uint32(i))
		pp.Forward(struct{}{}, b, len(b))
	}
	waitFor(t, "5 packets", func() bool { return rec.count() == 5 })
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if !slices.Equal(rec.seqs, []uint32{0, 1, 2, 3, 4}) {
		t.Errorf("delivered %v, want in order", rec.seqs)
	}
}

func TestPipeBlackoutAtDelivery(t *testing.T) {
	pp, rec := startPipe(t, &Profile{Name: "t", Up: Params{Delay: 50 * time.Millisecond}})
	b := make([]byte, 10)
	for range 10 {
		pp.Forward(struct{}{}, b, len(b))
	}
	pp.Impairment().SetBlackout(true)
	waitFor(t, "blackout drops", func() bool { return pp.Stats().Dropped.Blackout == 10 })
	if n := rec.count(); n != 0 {
		t.Errorf("%d packets delivered into a blackout", n)
	}
	pp.Impairment().SetBlackout(false)
	pp.Forward(struct{}{}, b, len(b))
	waitFor(t, "delivery after the blackout", func() bool { return rec.count() == 1 })
}

func TestPipeRunReturnsOnQuit(t *testing.T) {
	im, err := NewImpairment(&Profile{Name: "t", Up: Params{Delay: time.Hour}}, Up, 1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pp := NewPipe(im, func(struct{}, []byte) error { return nil })
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() { pp.Run(quit); close(done) }()
	pp.Forward(struct{}{}, []byte("x"), 1)
	if st := pp.Stats(); st.InFlight != 1 {
		t.Errorf("in flight %d, want 1", st.InFlight)
	}
	close(quit)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after quit")
	}
	if st := pp.Stats(); st.InFlight != 0 {
		t.Errorf("in flight after Run returned: %d, want 0 (discarded)", st.InFlight)
	}
}
