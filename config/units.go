package config

import "github.com/meridian-gw/meridian/internal/units"

// BitRate is a rate in bits per second, written in a topology file as
// e.g. "10Mbit" (the grammar is package internal/units').
type BitRate = units.BitRate

// ByteSize is a size in bytes, written in a topology file as e.g. "64MiB".
type ByteSize = units.ByteSize

// ParseBitRate parses a rate in bits per second such as "10Mbit",
// "512kbit" or "1.5Gbit". Units are decimal (1kbit = 1000 bit/s) and
// case-insensitive: bit, kbit, Mbit, Gbit, Tbit, optionally with "/s". A
// unit is required, and "Mbps"-style units are refused because tools
// disagree on whether they mean bits or bytes. The result is always
// greater than zero.
func ParseBitRate(s string) (bitsPerSecond int64, err error) {
	r, err := units.ParseBitRate(s)
	return int64(r), err
}

// ParseByteSize parses a size in bytes such as "64MiB", "512KiB" or "1GB".
// Units are case-insensitive: B, KB, MB, GB, TB (powers of 1000) and KiB,
// MiB, GiB, TiB (powers of 1024); a bare number is bytes. The result is
// always greater than zero.
func ParseByteSize(s string) (int64, error) {
	b, err := units.ParseByteSize(s)
	return int64(b), err
}
