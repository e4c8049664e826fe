package chaos

import "github.com/meridian-gw/meridian/chaos/profiles"

// The link profiles live in package chaos/profiles, which is pure data, so
// that transport tuning can read them without importing chaos. These names
// let lab code say chaos.Profile and chaos.LoadProfile.
type (
	Profile        = profiles.Profile
	Params         = profiles.Params
	GilbertElliott = profiles.GilbertElliott
	Event          = profiles.Event
	EventKind      = profiles.EventKind
	Dir            = profiles.Dir
)

// Directions of a link, and kinds of scheduled event.
const (
	Up   = profiles.Up   // from the dialing side (the proxy's client) to the listening side
	Down = profiles.Down // from the listening side back to the dialing side

	EventBlackout = profiles.EventBlackout
	EventHandover = profiles.EventHandover
	EventRainFade = profiles.EventRainFade
)

// LoadProfile returns a fresh copy of the embedded profile called name; see
// ProfileNames. An unknown name yields an error wrapping profiles.ErrUnknown.
func LoadProfile(name string) (*Profile, error) { return profiles.Load(name) }

// ProfileNames lists the embedded profiles, sorted.
func ProfileNames() []string { return profiles.Names() }

// ParseProfile decodes a custom profile from YAML in the schema of the
// embedded ones, strictly, reporting every problem with its line and column.
func ParseProfile(name string, data []byte) (*Profile, error) { return profiles.Parse(name, data) }
