package routing

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/meridian-gw/meridian/config"
	"github.com/meridian-gw/meridian/internal/alloctest"
	"github.com/meridian-gw/meridian/topology"
)

// FuzzCompile parses arbitrary topology files and, for those config
// accepts, builds the topology (topology.New) and compiles every
// gateway's table (Compile), rendering each: no panic, and the whole costs
// at most a bounded multiple of the file's size. Seeds are this package's
// golden inputs and the repository's examples.
func FuzzCompile(f *testing.F) {
	var seeds []string
	for _, pattern := range []string{"testdata/*.yaml", "../examples/*.yaml"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, m...)
	}
	if len(seeds) == 0 {
		f.Fatal("no seed files")
	}
	for _, path := range seeds {
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := config.Parse("fuzz.yaml", data)
		if err != nil {
			return
		}
		// Routes are compiled per gateway: tables grow with gateways ×
		// routes, which the file's size bounds by its square.
		ceiling := uint64(64<<20 + 4096*len(data))
		alloctest.Check(t, "topology.New and Compile", ceiling, func() {
			topo, err := topology.New(file)
			if err != nil {
				return
			}
			if _, err := renderTables(topo); err != nil {
				return
			}
		})
	})
}
