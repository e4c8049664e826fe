package profile

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
)

//go:embed *.yaml
var files embed.FS

// ErrUnknown is returned (wrapped) by Load for a name that is not embedded.
var ErrUnknown = errors.New("unknown link profile")

// Names returns the names of the embedded profiles, sorted.
func Names() []string {
	ents, err := fs.ReadDir(files, ".")
	if err != nil {
		panic(err) // the embedded directory always reads
	}
	var names []string
	for _, e := range ents {
		if n, ok := strings.CutSuffix(e.Name(), ".yaml"); ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}

// Load returns a fresh copy of the embedded profile called name.
func Load(name string) (*Profile, error) {
	if !nameRE.MatchString(name) || !slices.Contains(Names(), name) {
		return nil, fmt.Errorf("%w %q (known: %s)", ErrUnknown, name, strings.Join(Names(), ", "))
	}
	data, err := files.ReadFile(name + ".yaml")
	if err != nil {
		return nil, fmt.Errorf("load profile %q: %w", name, err)
	}
	return Parse(name, data)
}

// Source returns the YAML text of the embedded profile called name, for
// showing or for copying into a custom profile.
func Source(name string) ([]byte, error) {
	if !nameRE.MatchString(name) || !slices.Contains(Names(), name) {
		return nil, fmt.Errorf("%w %q (known: %s)", ErrUnknown, name, strings.Join(Names(), ", "))
	}
	return files.ReadFile(name + ".yaml")
}
