package mirror

import (
	"testing"
	"time"
)

// SetFenceRecheckForTest shortens how often a fenced leg looks for a lifted
// fence, for the duration of a test.
func SetFenceRecheckForTest(t *testing.T, d time.Duration) {
	old := fenceRecheck
	fenceRecheck = d
	t.Cleanup(func() { fenceRecheck = old })
}

// SetOffsetMapTuningForTest sets how many ranges a progress record carries
// before they are sealed into a segment, and how often sinks prune
// segments, for the duration of a test.
func SetOffsetMapTuningForTest(t *testing.T, tail int, prune time.Duration) {
	oldTail, oldPrune := tailRanges, pruneEvery
	tailRanges, pruneEvery = tail, prune
	t.Cleanup(func() { tailRanges, pruneEvery = oldTail, oldPrune })
}

// SetMergeAlwaysForTest makes passthrough sinks merge small batches as if
// the destination were slow and the CPUs idle, for the duration of a test.
func SetMergeAlwaysForTest(t *testing.T) {
	mergeAlways = true
	t.Cleanup(func() { mergeAlways = false })
}
