//go:build linux

package lab_test

import (
	"context"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/chaos"
	"github.com/meridian-gw/meridian/chaos/lab"
	"github.com/meridian-gw/meridian/chaos/netlab/netlabtest"
)

// TestLinkBenchRuns runs both contenders of the link benchmark briefly over
// a 40 ms, 10 Mbit/s lab link: meridian must deliver, both must run without
// error, and each destination must be an exact prefix of its source (the
// tcp contender's multi-megabyte fetches may not complete in so short a
// run under -race). The figures themselves are for `meridian bench link`,
// not for a test.
func TestLinkBenchRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("packet lab benchmark")
	}
	netlabtest.Require(t)
	p, err := chaos.LoadProfile("wan")
	if err != nil {
		t.Fatal(err)
	}
	p = p.WithRTT(40 * time.Millisecond).WithRate(10_000_000).WithLoss(0.001).WithoutEvents()
	rep, err := lab.RunLinkBench(context.Background(), lab.LinkBenchOptions{Profile: p, Warmup: 4 * time.Second,
		Duration: 6 * time.Second, ValueSize: 500, Logger: testLogger(), Progress: func(s string) { t.Log(s) }})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rep.Results {
		t.Logf("%+v", *r)
		if r.Error != "" || !r.Exact || r.Contender == lab.ContenderMeridian && r.Records == 0 {
			t.Errorf("%s: %+v", r.Contender, *r)
		}
	}
}
