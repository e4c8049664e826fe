package transport

import "github.com/klauspost/compress/zstd"

// NewEncoderLevel is newEncoderLevel, for benchmarks comparing zstd levels.
func NewEncoderLevel(c Codec, level zstd.EncoderLevel) (*Encoder, error) {
	return newEncoderLevel(c, level)
}
