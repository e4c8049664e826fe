//go:build !unix

package mirror

import "time"

func processCPUTime() (time.Duration, bool) { return 0, false }
