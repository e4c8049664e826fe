package chaos

import "github.com/meridian-gw/meridian/topology/profile"

// The link profiles live in package topology/profile, which is pure data
// beside the model, so that the production path (gateway, mirror, transport
// tuning, config) reads them without importing chaos. These names
// let lab code say chaos.Profile and chaos.LoadProfile.
type (
	Profile        = profile.Profile
	Params         = profile.Params
	GilbertElliott = profile.GilbertElliott
	Event          = profile.Event
	EventKind      = profile.EventKind
	Dir            = profile.Dir
)

// Directions of a link, and kinds of scheduled event.
const (
	Up   = profile.Up   // from the dialing side (the proxy's client) to the listening side
	Down = profile.Down // from the listening side back to the dialing side

	EventBlackout = profile.EventBlackout
	EventHandover = profile.EventHandover
	EventRainFade = profile.EventRainFade
)

// LoadProfile returns a fresh copy of the embedded profile called name; see
// ProfileNames. An unknown name yields an error wrapping profile.ErrUnknown.
func LoadProfile(name string) (*Profile, error) { return profile.Load(name) }

// ProfileNames lists the embedded profiles, sorted.
func ProfileNames() []string { return profile.Names() }

// ParseProfile decodes a custom profile from YAML in the schema of the
// embedded ones, strictly, reporting every problem with its line and column.
func ParseProfile(name string, data []byte) (*Profile, error) { return profile.Parse(name, data) }
