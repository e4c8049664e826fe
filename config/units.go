package config

import "github.com/meridian-gw/meridian/internal/units"

// BitRate is a rate in bits per second, written in a topology file as
// e.g. "10Mbit" (the grammar is package internal/units').
type BitRate = units.BitRate

// ByteSize is a size in bytes, written in a topology file as e.g. "64MiB".
type ByteSize = units.ByteSize
