package mirror

import "testing"

// A broker answers retention.ms's fallback with the synonym it has, often
// log.retention.hours=168: read as milliseconds it would make removing a
// topic's retention override look like lowering it to 168 ms.
func TestSynonymValueInTheTopicConfigsUnit(t *testing.T) {
	for _, c := range []struct{ name, v, want string }{
		{"log.retention.hours", "168", "604800000"},
		{"log.retention.minutes", "90", "5400000"},
		{"log.retention.ms", "7200000", "7200000"},
		{"log.retention.bytes", "-1", "-1"},
		{"log.retention.hours", "-1", "-1"},
	} {
		if got := synonymValue(c.name, c.v); got != c.want {
			t.Errorf("synonymValue(%s, %s) = %s, want %s", c.name, c.v, got, c.want)
		}
	}
	if lowersRetention("14400000", synonymValue("log.retention.hours", "168"), true) {
		t.Error("removing a 4 h override over a 168 h broker default counts as lowering retention")
	}
}
