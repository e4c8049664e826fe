package topology

import (
	"testing"

	"github.com/meridian-gw/meridian/topology/profile"
)

func TestLinkDataRate(t *testing.T) {
	up := func(bps int64) *profile.Profile {
		return &profile.Profile{Up: profile.Params{Rate: bps}, Down: profile.Params{Rate: 100 * bps}}
	}
	tests := []struct {
		name  string
		limit int64
		p     *profile.Profile
		want  int64
	}{
		{"profile only", 0, up(10_000_000), 10_000_000},
		{"limit only, no profile", 2_000_000, nil, 2_000_000},
		{"limit only, profile unlimited", 2_000_000, up(0), 2_000_000},
		{"limit below profile", 2_000_000, up(10_000_000), 2_000_000},
		{"limit above profile", 50_000_000, up(10_000_000), 10_000_000},
		{"unknown", 0, nil, 0},
		{"unknown, profile unlimited", 0, up(0), 0},
	}
	for _, tt := range tests {
		l := &Link{RateLimit: tt.limit}
		if got := l.DataRate(tt.p); got != tt.want {
			t.Errorf("%s: DataRate = %d, want %d", tt.name, got, tt.want)
		}
	}
	// The listening side of a duplex session sends down the profile.
	if got := (&Link{RateLimit: 2_000_000}).DataRateFrom(up(10_000_000), false); got != 2_000_000 {
		t.Errorf("listener, limit below down rate: got %d, want 2000000", got)
	}
	if got := (&Link{}).DataRateFrom(up(10_000), false); got != 1_000_000 {
		t.Errorf("listener, no limit: got %d, want the down rate 1000000", got)
	}
	if got := (*Link)(nil).DataRate(up(5)); got != 5 {
		t.Errorf("nil link: DataRate = %d, want the profile's 5", got)
	}
	geo, err := profile.Load("geo-satellite")
	if err != nil {
		t.Fatal(err)
	}
	if got := (&Link{RateLimit: 2_000_000}).DataRate(geo); got != 2_000_000 {
		t.Errorf("geo-satellite with rate_limit 2Mbit: DataRate = %d, want 2000000", got)
	}
}
