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
