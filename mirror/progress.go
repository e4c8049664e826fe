package mirror

import (
	"errors"

	"github.com/meridian-gw/meridian/mirror/progress"
)

// ProgressTopic is the destination-cluster topic where each leg's progress
// is committed in the same transaction as the mirrored records (see package
// progress).
const ProgressTopic = progress.Topic

// tp names one partition of a topic.
type tp = progress.TP

// ErrFenced is returned by a receiver that finds its leg fenced.
var ErrFenced = errors.New("leg is fenced")
