// Package units is the one grammar for the quantities Meridian's files and
// flags are written in: bit rates ("10Mbit"), byte sizes ("64MiB") and
// durations ("300ms"). Topology files (package config), link profiles
// (package topology/profile) and the CLI all parse through it, so a value
// that is valid in one is valid in the others.
//
// # Grammar
//
// A quantity is a decimal number (no sign, no exponent), an optional space
// and a unit. Units are case-insensitive.
//
//   - Bit rates: bit, kbit, Mbit, Gbit, Tbit (powers of 1000), optionally
//     followed by "/s" ("10Mbit/s"). The unit is required. "Mbps"-style
//     units are refused with a hint, since tools disagree on whether they
//     mean bits or bytes.
//   - Byte sizes: B, KB, MB, GB, TB (powers of 1000) and KiB, MiB, GiB, TiB
//     (powers of 1024); a bare number is bytes.
//   - Durations: Go durations (time.ParseDuration): "300ms", "1.5s",
//     "4m40s".
//
// Rates and sizes must be whole numbers of bits per second or bytes and
// greater than zero ("1.5KiB" is 1536 bytes; "0.5bit" is an error). What
// zero or a missing value means, and which ranges a field accepts, is the
// caller's business.
//
// The package is a leaf: it imports nothing of Meridian's.
package units

import (
	"fmt"
	"math"
	"math/big"
	"regexp"
	"strings"
	"time"
)

// Error is a value that does not follow the grammar. Its message reads
// `invalid bit rate "10Mbps": ambiguous unit "Mbps"; write "10Mbit" for
// bits per second`; callers that phrase their own message use Err, the
// reason alone.
type Error struct {
	What  string // "bit rate", "byte size" or "duration"
	Input string // the text as given
	Err   error  // the reason, e.g. `missing unit; write e.g. "10Mbit"`
}

func (e *Error) Error() string { return fmt.Sprintf("invalid %s %q: %v", e.What, e.Input, e.Err) }

// Unwrap returns the reason.
func (e *Error) Unwrap() error { return e.Err }

// maxInput is the longest string a parser reads: a quantity is a few
// bytes, and an error quotes its input (at most its first maxInput bytes).
const maxInput = 64

// tooLong refuses s if it is longer than maxInput.
func tooLong(what, s string) error {
	if len(s) <= maxInput {
		return nil
	}
	return fail(what, s[:maxInput]+"...", "longer than %d bytes", maxInput)
}

func fail(what, input, format string, args ...any) error {
	return &Error{What: what, Input: input, Err: fmt.Errorf(format, args...)}
}

// BitRate is a rate in bits per second.
type BitRate int64

// ByteSize is a size in bytes.
type ByteSize int64

var bitRateUnits = map[string]int64{
	"bit":  1,
	"kbit": 1e3,
	"mbit": 1e6,
	"gbit": 1e9,
	"tbit": 1e12,
}

var byteSizeUnits = map[string]int64{
	"":    1,
	"b":   1,
	"kb":  1e3,
	"mb":  1e6,
	"gb":  1e9,
	"tb":  1e12,
	"kib": 1 << 10,
	"mib": 1 << 20,
	"gib": 1 << 30,
	"tib": 1 << 40,
}

var quantityRE = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?) ?([A-Za-z/]*)$`)

// ParseBitRate parses a rate in bits per second such as "10Mbit",
// "512kbit", "1.5Gbit" or "10Mbit/s" (see the package doc). The result is
// always greater than zero.
func ParseBitRate(s string) (BitRate, error) {
	const what = "bit rate"
	if err := tooLong(what, s); err != nil {
		return 0, err
	}
	num, unit, err := splitQuantity(s, what, `"10Mbit"`)
	if err != nil {
		return 0, err
	}
	if unit == "" {
		return 0, fail(what, s, `missing unit; write e.g. "10Mbit"`)
	}
	lu := strings.ToLower(unit)
	mult, ok := bitRateUnits[strings.TrimSuffix(lu, "/s")]
	if !ok {
		if prefix, ok := strings.CutSuffix(unit, "bps"); ok && (prefix == "" || bitRateUnits[strings.ToLower(prefix)+"bit"] != 0) {
			return 0, fail(what, s, "ambiguous unit %q; write %q for bits per second", unit, num+prefix+"bit")
		}
		return 0, fail(what, s, "unknown unit %q; use bit, kbit, Mbit, Gbit or Tbit (bits per second)", unit)
	}
	n, err := scale(s, what, num, mult, "bits per second")
	return BitRate(n), err
}

// ParseByteSize parses a size in bytes such as "64MiB", "512KiB", "1GB" or
// "4096" (see the package doc). The result is always greater than zero.
func ParseByteSize(s string) (ByteSize, error) {
	const what = "byte size"
	if err := tooLong(what, s); err != nil {
		return 0, err
	}
	num, unit, err := splitQuantity(s, what, `"64MiB"`)
	if err != nil {
		return 0, err
	}
	mult, ok := byteSizeUnits[strings.ToLower(unit)]
	if !ok {
		return 0, fail(what, s, "unknown unit %q; use B, KiB, MiB, GiB, TiB or KB, MB, GB, TB", unit)
	}
	n, err := scale(s, what, num, mult, "bytes")
	return ByteSize(n), err
}

// ParseDuration parses a Go duration such as "300ms", "1.5s" or "4m40s".
func ParseDuration(s string) (time.Duration, error) {
	if err := tooLong("duration", s); err != nil {
		return 0, err
	}
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fail("duration", s, `want a number and a unit, e.g. "300ms", "1.5s" or "2m"`)
	}
	return d, nil
}

func splitQuantity(s, what, example string) (num, unit string, err error) {
	m := quantityRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return "", "", fail(what, s, "want a number and a unit, e.g. %s", example)
	}
	return m[1], m[2], nil
}

// scale returns num×mult, which must be a whole number in (0, MaxInt64].
func scale(s, what, num string, mult int64, units string) (int64, error) {
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, fail(what, s, "bad number %q", num)
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	switch {
	case r.Sign() == 0:
		return 0, fail(what, s, "must be greater than zero")
	case !r.IsInt():
		return 0, fail(what, s, "not a whole number of %s", units)
	case r.Num().Cmp(big.NewInt(math.MaxInt64)) > 0:
		return 0, fail(what, s, "too large")
	}
	return r.Num().Int64(), nil
}

// String renders r as e.g. "10Mbit/s", "1.5Mbit/s", "2Gbit/s" or
// "512kbit/s"; zero or less is "0bit/s". The result parses back to r.
func (r BitRate) String() string {
	n := int64(r)
	switch {
	case n <= 0:
		return "0bit/s"
	case n%1_000_000_000 == 0:
		return fmt.Sprintf("%dGbit/s", n/1_000_000_000)
	case n >= 1_000_000:
		return fmt.Sprintf("%gMbit/s", float64(n)/1e6)
	case n >= 1000:
		return fmt.Sprintf("%gkbit/s", float64(n)/1e3)
	}
	return fmt.Sprintf("%dbit/s", n)
}

// String renders b in binary units when it is a whole number of them
// ("64MiB"), else in bytes ("1500B").
func (b ByteSize) String() string {
	n := int64(b)
	for _, u := range []struct {
		size int64
		name string
	}{{1 << 40, "TiB"}, {1 << 30, "GiB"}, {1 << 20, "MiB"}, {1 << 10, "KiB"}} {
		if n >= u.size && n%u.size == 0 {
			return fmt.Sprintf("%d%s", n/u.size, u.name)
		}
	}
	return fmt.Sprintf("%dB", n)
}

// UnmarshalText parses text with ParseBitRate; empty text is zero (not
// set). Decoders of text formats (such as config's) call it.
func (r *BitRate) UnmarshalText(text []byte) error {
	if len(text) == 0 {
		*r = 0
		return nil
	}
	v, err := ParseBitRate(string(text))
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// UnmarshalText parses text with ParseByteSize; empty text is zero (not
// set).
func (b *ByteSize) UnmarshalText(text []byte) error {
	if len(text) == 0 {
		*b = 0
		return nil
	}
	v, err := ParseByteSize(string(text))
	if err != nil {
		return err
	}
	*b = v
	return nil
}
