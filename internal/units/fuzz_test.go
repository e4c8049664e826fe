package units

import (
	"strings"
	"testing"

	"github.com/meridian-gw/meridian/internal/alloctest"
)

// FuzzParse feeds arbitrary strings to every unit parser: no panic,
// allocation bounded by the input (an error message quotes it), and what a
// parser accepts is positive and parses again from its String form.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"10Mbit", "1.5Gbit", "512kbit/s", "64MiB", "1KB", "512 B", "30s", "1h30m", "2d", "1e6bit", "99999999999Tbit", " 10 Mbit "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var (
			br     BitRate
			bs     ByteSize
			e1, e2 error
		)
		alloctest.Check(t, "parse", uint64(16*len(s)+64<<10), func() {
			br, e1 = ParseBitRate(s)
			bs, e2 = ParseByteSize(s)
			ParseDuration(s)
		})
		if e1 == nil {
			if br <= 0 {
				t.Fatalf("ParseBitRate(%q) = %d", s, br)
			}
			if again, err := ParseBitRate(br.String()); err != nil || again != br {
				t.Fatalf("ParseBitRate(%q) = %d, whose String %q parses to %d, %v", s, br, br.String(), again, err)
			}
		}
		if e2 == nil {
			if bs < 0 {
				t.Fatalf("ParseByteSize(%q) = %d", s, bs)
			}
			if again, err := ParseByteSize(bs.String()); err != nil || again != bs {
				t.Fatalf("ParseByteSize(%q) = %d, whose String %q parses to %d, %v", s, bs, bs.String(), again, err)
			}
		}
	})
}

// TestParseRefusesLongInput checks that a parser refuses a string longer
// than maxInput and quotes only its start.
func TestParseRefusesLongInput(t *testing.T) {
	long := "1" + strings.Repeat("0", 100) + "Mbit"
	for name, parse := range map[string]func(string) error{
		"bit rate":  func(s string) error { _, err := ParseBitRate(s); return err },
		"byte size": func(s string) error { _, err := ParseByteSize(s); return err },
		"duration":  func(s string) error { _, err := ParseDuration(s); return err },
	} {
		err := parse(long)
		if err == nil || !strings.Contains(err.Error(), "longer than 64 bytes") || strings.Contains(err.Error(), long) {
			t.Errorf("%s: got %v, want a length error quoting only the start", name, err)
		}
	}
}
