package routing

import (
	"testing"

	"github.com/meridian-gw/meridian/config"
	"github.com/meridian-gw/meridian/internal/alloctest"
	"github.com/meridian-gw/meridian/internal/golden"
	"github.com/meridian-gw/meridian/topology"
)

// FuzzCompile parses arbitrary topology files and, for those config
// accepts, builds the topology (topology.New) and compiles every
// gateway's table (Compile), rendering each: no panic, and the whole costs
// at most a bounded multiple of the file's size. Seeds are this package's
// golden inputs and the repository's examples.
func FuzzCompile(f *testing.F) {
	for _, data := range golden.Inputs(f, "testdata/*.yaml", "../examples/*.yaml") {
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
