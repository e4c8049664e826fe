package config

import (
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/meridian-gw/meridian/internal/redact"
)

// Secret is a setting that must never be printed: a SASL password, the
// admin token. It prints as [redacted] with every fmt verb, in JSON and
// YAML and in slog; Reveal returns the value for the one place that
// uses it. Write it as ${ENV} in the file.
type Secret string

// Reveal returns the secret value.
func (s Secret) Reveal() string { return string(s) }

// String is [redacted], or "" for an empty secret (so that "missing" reads
// right).
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redact.Marker
}

// GoString is String, so that %#v hides the value too.
func (s Secret) GoString() string { return `config.Secret("` + s.String() + `")` }

// Format makes every verb (%s, %v, %q, %x, %d) print String.
func (s Secret) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		_, _ = f.Write([]byte(`"` + s.String() + `"`))
		return
	}
	_, _ = f.Write([]byte(s.String()))
}

// MarshalJSON writes [redacted].
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// MarshalYAML writes [redacted].
func (s Secret) MarshalYAML() (any, error) { return s.String(), nil }

// MarshalText writes [redacted] (encoders that use encoding.TextMarshaler).
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText takes the value as is (after ${ENV} expansion).
func (s *Secret) UnmarshalText(b []byte) error {
	*s = Secret(b)
	return nil
}

// LogValue is [redacted] in slog.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }
