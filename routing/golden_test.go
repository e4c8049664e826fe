package routing

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/meridian-gw/meridian/internal/golden"
	"github.com/meridian-gw/meridian/topology"
	"github.com/meridian-gw/meridian/topology/topologytest"
)

// TestTablesGolden compiles every gateway of each testdata/*.yaml and
// compares the rendered tables with the .golden file beside it. Run with
// -update to rewrite them, then read the diff.
func TestTablesGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata/*.yaml: %v", err)
	}
	for _, path := range files {
		name := strings.TrimSuffix(filepath.Base(path), ".yaml")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			got, err := renderTables(topologytest.Parse(t, string(data)))
			if err != nil {
				t.Fatal(err)
			}
			goldenPath := strings.TrimSuffix(path, ".yaml") + ".golden"
			golden.Check(t, goldenPath, got)
		})
	}
}

// renderTables writes every gateway's table, gateways by name.
func renderTables(topo *topology.Topology) (string, error) {
	names := make([]string, 0, len(topo.Gateways))
	for n := range topo.Gateways {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for i, n := range names {
		tab, err := Compile(topo, n)
		if err != nil {
			return "", fmt.Errorf("compile %s: %w", n, err)
		}
		if i > 0 {
			b.WriteByte('\n')
		}
		renderTable(&b, tab)
	}
	return b.String(), nil
}

func renderTable(b *strings.Builder, tab *Table) {
	fmt.Fprintf(b, "gateway %s (region %s)\n", tab.Gateway.Name, tab.Gateway.Region.Name)
	if len(tab.Out) == 0 {
		b.WriteString("  out: none\n")
	}
	for _, p := range tab.Out {
		who := "dials"
		if !p.Dials {
			who = "dialled by " + p.Gateway.Name
		}
		fmt.Fprintf(b, "  out to %s (next hop) via %s, %s\n", p.Gateway.Name, linkString(p.Link), who)
		for _, l := range p.Legs {
			fmt.Fprintf(b, "    %s\n", legString(l))
		}
		for _, l := range p.Receive {
			fmt.Fprintf(b, "    receives %s\n", l.ID)
		}
		for i, rp := range p.RelayPaths {
			what := "relay when down"
			if i > 0 {
				what = "or, if that fails"
			}
			fmt.Fprintf(b, "    %s: %s\n", what, rp.Describe())
		}
		for _, g := range p.Standby {
			fmt.Fprintf(b, "    standby receiver %s\n", g.Name)
		}
		for _, l := range p.Legs {
			if l.Shared() {
				var names []string
				for _, g := range l.Senders {
					names = append(names, g.Name)
				}
				fmt.Fprintf(b, "    %s shared by %s (group %s)\n", l.ID, strings.Join(names, ", "), l.ShareGroup())
			}
		}
	}
	for _, p := range tab.Relays {
		fmt.Fprintf(b, "  relay peer %s via %s\n", p.Gateway.Name, linkString(p.Link))
	}
	if len(tab.In) == 0 {
		b.WriteString("  in: none\n")
	}
	for _, l := range tab.In {
		fmt.Fprintf(b, "  in %s via %s\n", legString(l), l.Link.Name)
	}
}

func linkString(l *topology.Link) string {
	pin := func(g *topology.Gateway) string {
		if g == nil {
			return "*"
		}
		return g.Name
	}
	return fmt.Sprintf("link %s [%s/%s -- %s/%s] profile %s, compression %s",
		l.Name, l.A.Name, pin(l.PinA), l.B.Name, pin(l.PinB), l.Profile, l.Compression)
}

func legString(l *Leg) string {
	s := fmt.Sprintf("%s: %s -> %s, topics %v", l.ID, l.From.Ref(), l.To.Ref(), l.Route.Include)
	if len(l.Route.Exclude) > 0 {
		s += fmt.Sprintf(" except %v", l.Route.Exclude)
	}
	if l.Route.Rename != "{topic}" {
		s += ", rename " + l.Route.Rename
	}
	if l.Route.Priority != 0 {
		s += fmt.Sprintf(", priority %d", l.Route.Priority)
	}
	if l.SyncsGroups() {
		s += fmt.Sprintf(", groups %v", l.Route.GroupInclude)
	}
	if len(l.LoopWriters) > 0 {
		s += fmt.Sprintf(", loop writers %v", l.LoopWriters)
	}
	return s
}
