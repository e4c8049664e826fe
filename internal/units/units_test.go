package units

import (
	"testing"
	"time"
)

func TestParseBitRate(t *testing.T) {
	tests := []struct {
		in      string
		want    BitRate
		wantErr string
	}{
		{"10Mbit", 10_000_000, ""},
		{"10Mbit/s", 10_000_000, ""},
		{"512kbit", 512_000, ""},
		{"512Kbit", 512_000, ""},
		{"1Gbit", 1_000_000_000, ""},
		{"1.5Gbit", 1_500_000_000, ""},
		{"64bit", 64, ""},
		{"2tbit", 2_000_000_000_000, ""},
		{"10 Mbit", 10_000_000, ""},
		{"100 mbit", 100_000_000, ""},
		{" 10Mbit ", 10_000_000, ""},
		{"10MBIT", 10_000_000, ""},
		{"", 0, `invalid bit rate "": want a number and a unit, e.g. "10Mbit"`},
		{"1000", 0, `invalid bit rate "1000": missing unit; write e.g. "10Mbit"`},
		{"10Mbps", 0, `invalid bit rate "10Mbps": ambiguous unit "Mbps"; write "10Mbit" for bits per second`},
		{"10bps", 0, `invalid bit rate "10bps": ambiguous unit "bps"; write "10bit" for bits per second`},
		{"10MB", 0, `invalid bit rate "10MB": unknown unit "MB"; use bit, kbit, Mbit, Gbit or Tbit (bits per second)`},
		{"10/s", 0, `invalid bit rate "10/s": unknown unit "/s"; use bit, kbit, Mbit, Gbit or Tbit (bits per second)`},
		{"10MB/s", 0, `invalid bit rate "10MB/s": unknown unit "MB/s"; use bit, kbit, Mbit, Gbit or Tbit (bits per second)`},
		{"0Mbit", 0, `invalid bit rate "0Mbit": must be greater than zero`},
		{"-1Mbit", 0, `invalid bit rate "-1Mbit": want a number and a unit, e.g. "10Mbit"`},
		{"0.5bit", 0, `invalid bit rate "0.5bit": not a whole number of bits per second`},
		{"99999999999Tbit", 0, `invalid bit rate "99999999999Tbit": too large`},
		{"1e6bit", 0, `invalid bit rate "1e6bit": want a number and a unit, e.g. "10Mbit"`},
	}
	for _, tt := range tests {
		got, err := ParseBitRate(tt.in)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("ParseBitRate(%q) = %d, %v; want error %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseBitRate(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestParseByteSize(t *testing.T) {
	tests := []struct {
		in      string
		want    ByteSize
		wantErr string
	}{
		{"64MiB", 64 << 20, ""},
		{"512KiB", 512 << 10, ""},
		{"256kB", 256_000, ""},
		{"1GB", 1_000_000_000, ""},
		{"1.5KiB", 1536, ""},
		{"4096", 4096, ""},
		{"100B", 100, ""},
		{"2gib", 2 << 30, ""},
		{"1TiB", 1 << 40, ""},
		{"0MiB", 0, `invalid byte size "0MiB": must be greater than zero`},
		{"0", 0, `invalid byte size "0": must be greater than zero`},
		{"64 megabytes", 0, `invalid byte size "64 megabytes": unknown unit "megabytes"; use B, KiB, MiB, GiB, TiB or KB, MB, GB, TB`},
		{"MiB", 0, `invalid byte size "MiB": want a number and a unit, e.g. "64MiB"`},
		{"1.0001KB", 0, `invalid byte size "1.0001KB": not a whole number of bytes`},
		{"9000000TiB", 0, `invalid byte size "9000000TiB": too large`},
	}
	for _, tt := range tests {
		got, err := ParseByteSize(tt.in)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("ParseByteSize(%q) = %d, %v; want error %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{"300ms": 300 * time.Millisecond, "4m40s": 280 * time.Second, "250us": 250 * time.Microsecond, "0": 0} {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"40", "2 seconds", "", "fast"} {
		if _, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) succeeded", in)
		}
	}
}

// String and UnmarshalText agree: what String renders parses back.
func TestStringRoundTrip(t *testing.T) {
	for _, r := range []BitRate{64, 512_000, 1_500_000, 10_000_000, 1_500_000_000, 2_000_000_000_000} {
		var got BitRate
		if err := got.UnmarshalText([]byte(r.String())); err != nil || got != r {
			t.Errorf("BitRate(%d).String() = %q parses to %d, %v", r, r.String(), got, err)
		}
	}
	for _, b := range []ByteSize{1, 1500, 64 << 10, 64 << 20, 3 << 30, 1 << 40} {
		var got ByteSize
		if err := got.UnmarshalText([]byte(b.String())); err != nil || got != b {
			t.Errorf("ByteSize(%d).String() = %q parses to %d, %v", b, b.String(), got, err)
		}
	}
	var r BitRate = 5
	if err := r.UnmarshalText(nil); err != nil || r != 0 {
		t.Errorf("UnmarshalText(empty) = %d, %v; want 0 (not set)", r, err)
	}
}
