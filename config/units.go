package config

import (
	"fmt"
	"math"
	"math/big"
	"regexp"
	"strings"
)

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
// "512kbit" or "1.5Gbit". Units are decimal (1kbit = 1000 bit/s) and
// case-insensitive: bit, kbit, Mbit, Gbit, Tbit. A unit is required, and
// "Mbps"-style units are refused because tools disagree on whether they
// mean bits or bytes. The result is always greater than zero.
func ParseBitRate(s string) (bitsPerSecond int64, err error) {
	num, unit, err := splitQuantity(s, "bit rate", `"10Mbit"`)
	if err != nil {
		return 0, err
	}
	lu := strings.ToLower(unit)
	if lu == "" {
		return 0, fmt.Errorf("invalid bit rate %q: missing unit; write e.g. \"10Mbit\"", s)
	}
	mult, ok := bitRateUnits[lu]
	if !ok {
		if prefix, ok := strings.CutSuffix(unit, "bps"); ok && (prefix == "" || bitRateUnits[strings.ToLower(prefix)+"bit"] != 0) {
			return 0, fmt.Errorf("invalid bit rate %q: ambiguous unit %q; write %q for bits per second", s, unit, num+prefix+"bit")
		}
		return 0, fmt.Errorf("invalid bit rate %q: unknown unit %q; use bit, kbit, Mbit, Gbit or Tbit (bits per second)", s, unit)
	}
	return scale(s, "bit rate", num, mult, "bits per second")
}

// ParseByteSize parses a size in bytes such as "64MiB", "512KiB" or "1GB".
// Units are case-insensitive: B, KB, MB, GB, TB (powers of 1000) and KiB,
// MiB, GiB, TiB (powers of 1024); a bare number is bytes. The result is
// always greater than zero.
func ParseByteSize(s string) (int64, error) {
	num, unit, err := splitQuantity(s, "byte size", `"64MiB"`)
	if err != nil {
		return 0, err
	}
	mult, ok := byteSizeUnits[strings.ToLower(unit)]
	if !ok {
		return 0, fmt.Errorf("invalid byte size %q: unknown unit %q; use B, KiB, MiB, GiB, TiB or KB, MB, GB, TB", s, unit)
	}
	return scale(s, "byte size", num, mult, "bytes")
}

func splitQuantity(s, what, example string) (num, unit string, err error) {
	m := quantityRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return "", "", fmt.Errorf("invalid %s %q: want a number and a unit, e.g. %s", what, s, example)
	}
	return m[1], m[2], nil
}

// scale returns num×mult, which must be a whole number in (0, MaxInt64].
func scale(s, what, num string, mult int64, units string) (int64, error) {
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, fmt.Errorf("invalid %s %q: bad number %q", what, s, num)
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	switch {
	case r.Sign() == 0:
		return 0, fmt.Errorf("invalid %s %q: must be greater than zero", what, s)
	case !r.IsInt():
		return 0, fmt.Errorf("invalid %s %q: not a whole number of %s", what, s, units)
	case r.Num().Cmp(big.NewInt(math.MaxInt64)) > 0:
		return 0, fmt.Errorf("invalid %s %q: too large", what, s)
	}
	return r.Num().Int64(), nil
}
