package profile_test

import (
	"testing"

	"github.com/meridian-gw/meridian/topology/profile"

	"github.com/meridian-gw/meridian/internal/alloctest"
)

// FuzzParse: Parse never panics, and what it accepts validates and survives
// the With methods.
func FuzzParse(f *testing.F) {
	for _, name := range profile.Names() {
		src, err := profile.Source(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(src)
	}
	f.Add([]byte("link: {loss: 1%, rate: 1Mbit, queue: 10ms}\nevents: [{kind: blackout, at: 1s, duration: 1s}]\n"))
	f.Add([]byte("up: &a {delay: 1ms}\ndown: *a\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var p *profile.Profile
		var err error
		alloctest.Check(t, "Parse", uint64(1<<20+1024*len(data)), func() { p, err = profile.Parse("fuzz", data) })
		if err != nil {
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("Parse accepted a profile that does not validate: %v\n%s", err, data)
		}
		_ = p.WithRTT(p.RTT() * 2).WithRate(1_000_000).WithLoss(0.5).String()
	})
}
