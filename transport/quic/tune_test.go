package quic

import (
	"math"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/topology/profile"
)

// TestSessionForProfiles checks the tuning rules on every embedded profile
// and prints the table the package doc quotes:
//
//	go test -run TestSessionForProfiles -v ./transport/quic/
func TestSessionForProfiles(t *testing.T) {
	names := profile.Names()
	if len(names) == 0 {
		t.Fatal("no profiles")
	}
	for _, name := range names {
		p, err := profile.Load(name)
		if err != nil {
			t.Fatal(err)
		}
		l := LinkOf(p)
		s := SessionFor(p)
		maxRTT := l.RTT + l.Jitter + l.QueueDelay
		t.Logf("%-16s rtt %-6v max rtt %-8v rate %-10s loss %5.2f%% | window %5.1f MiB, idle %v, keep-alive %v, handshake %v, stripes %d..%d, lanes %d",
			name, l.RTT, maxRTT, profile.FormatRate(l.Rate), 100*l.Loss,
			float64(s.MaxStreamReceiveWindow)/(1<<20), s.MaxIdleTimeout, s.KeepAlivePeriod, s.HandshakeTimeout, max(s.Stripes, 1), max(s.MaxStripes, 1), s.Lanes)

		// Windows cover twice the bandwidth-delay product, per stream and
		// per connection.
		if l.Rate > 0 {
			bdp := float64(l.Rate) / 8 * maxRTT.Seconds()
			for what, w := range map[string]uint64{
				"stream": s.MaxStreamReceiveWindow, "connection": s.MaxConnectionReceiveWindow,
				"initial stream": s.InitialStreamReceiveWindow, "initial connection": s.InitialConnectionReceiveWindow,
			} {
				if float64(w) < min(2*bdp, maxWindow) {
					t.Errorf("%s: %s window %d < 2 × BDP (%.0f)", name, what, w, 2*bdp)
				}
			}
		}
		// A dead path is declared within 5 s, and three keep-alives in a
		// row may be lost before that.
		if s.MaxIdleTimeout > 5*time.Second {
			t.Errorf("%s: idle timeout %v", name, s.MaxIdleTimeout)
		}
		if 4*s.KeepAlivePeriod+maxRTT > s.MaxIdleTimeout || s.KeepAlivePeriod <= 0 {
			t.Errorf("%s: keep-alive %v does not fit 4 times (plus an RTT of %v) in %v", name, s.KeepAlivePeriod, maxRTT, s.MaxIdleTimeout)
		}
		if s.HandshakeTimeout < 12*maxRTT || s.HandshakeTimeout < DefaultHandshakeTimeout {
			t.Errorf("%s: handshake timeout %v for a max RTT of %v", name, s.HandshakeTimeout, maxRTT)
		}
		// The options are valid as they stand.
		if _, _, err := s.build("SessionFor("+name+")", false); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if _, _, err := s.build("SessionFor("+name+")", true); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}

	// The striping ceiling on the links of the goodput measurements.
	geo, _ := profile.Load("geo-satellite")
	for _, c := range []struct {
		loss float64
		want int
	}{{0.01, 79}, {0.05, MaxStripesLimit}} {
		s := SessionFor(geo.WithoutEvents().WithLoss(c.loss))
		if s.MaxStripes != c.want || s.Stripes != c.want/8 || s.Placement != PlaceAny {
			t.Errorf("geo-satellite at %g%% loss: stripes %d..%d (%s), want %d..%d", 100*c.loss, s.Stripes, s.MaxStripes, s.Placement, c.want/8, c.want)
		}
	}
	if r := RenoRate(600*time.Millisecond, 0.01); math.Abs(r-195e3) > 1e3 {
		t.Errorf("RenoRate(600ms, 1%%) = %.0f bit/s, want about 195 kbit/s", r)
	}
}
