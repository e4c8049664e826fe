package gateway

import (
	"net"
	"strconv"
	"testing"
)

func TestAdvertiseOf(t *testing.T) {
	bound := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 7101}
	any := &net.UDPAddr{IP: net.IPv4zero, Port: 7101}
	for _, tc := range []struct {
		adv     string
		bound   *net.UDPAddr
		dialOut bool
		want    string
		wantErr bool
	}{
		{"10.0.0.5:7101", bound, false, "10.0.0.5:7101", false},
		{"127.0.0.1:0", bound, false, "127.0.0.1:7101", false},
		{":7101", bound, false, "127.0.0.1:7101", false},
		{":7101", any, false, "", true},
		{":7101", any, true, "0.0.0.0:7101", false},
		{"localhost:7200", any, false, "127.0.0.1:7200", false},
		{"no-such-host.invalid:7101", any, true, "0.0.0.0:7101", false},
		{"no-such-host.invalid:7101", any, false, "", true},
	} {
		h, p, err := advertiseOf(tc.adv, tc.bound, tc.dialOut)
		got := net.JoinHostPort(h, strconv.Itoa(p))
		if tc.wantErr != (err != nil) || !tc.wantErr && got != tc.want {
			t.Errorf("advertiseOf(%q, %v, dialOut %v) = %s, %v; want %s (error %v)", tc.adv, tc.bound, tc.dialOut, got, err, tc.want, tc.wantErr)
		}
	}
}
