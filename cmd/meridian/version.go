package main

import (
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/meridian-gw/meridian/config"
)

// Build describes this binary: what `meridian version` prints.
type Build struct {
	Version string `json:"version"` // git describe at make build, or the module version, or "dev"
	Commit  string `json:"commit,omitempty"`
	// CommitTime is the commit's time (RFC 3339) and Modified whether the
	// work tree had uncommitted changes, both as the Go toolchain recorded
	// them in the binary.
	CommitTime string `json:"commit_time,omitempty"`
	Modified   bool   `json:"modified,omitempty"`
	Go         string `json:"go"`
	Platform   string `json:"platform"`
	// The wire protocol versions this build speaks (transport.VersionMin
	// to VersionMax): two gateways link when their ranges overlap.
	ProtocolMin int `json:"protocol_min"`
	ProtocolMax int `json:"protocol_max"`
}

// commit is set by make build (-ldflags "-X main.commit=$(git rev-parse
// HEAD)"): the toolchain's own vcs stamp is missing when GOFLAGS has
// -buildvcs=false, as on this project's machines.
var commit string

// buildInfo reads what the linker (-X main.version, main.commit) and the Go
// toolchain (the vcs.* build settings, the main module's version) put in
// the binary.
func buildInfo() Build {
	b := Build{Version: version, Commit: commit, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH,
		ProtocolMin: int(protoMin), ProtocolMax: int(protoMax)}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	if b.Version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		b.Version = bi.Main.Version // go install module@version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			if b.Commit == "" {
				b.Commit = s.Value
			}
		case "vcs.time":
			b.CommitTime = s.Value
		case "vcs.modified":
			b.Modified = s.Value == "true"
		}
	}
	return b
}

func newVersionCmd(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit, Go version and wire protocol versions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b := buildInfo()
			switch output {
			case "json":
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(b)
			case "text":
			default:
				return &exitError{2, fmt.Errorf("version: --output %q: want text or json", output)}
			}
			fmt.Fprintf(g.stdout, "meridian %s (wire protocol %d-%d)\n", b.Version, b.ProtocolMin, b.ProtocolMax)
			commit := b.Commit
			if commit == "" {
				commit = "unknown"
			}
			if b.Modified {
				commit += " (modified)"
			}
			if b.CommitTime != "" {
				commit += " " + b.CommitTime
			}
			fmt.Fprintf(g.stdout, "commit:   %s\ngo:       %s %s\n", commit, b.Go, b.Platform)
			return nil
		},
	}
	outputFlag(cmd, &output)
	return cmd
}

func newSchemaCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "schema",
		Short: "Print the JSON Schema of topology files (for editors and CI linters)",
		Long: `Print the JSON Schema (draft 2020-12) of topology file version 1, generated
from the configuration types. Editors with a YAML language server check a
file against it when its first line is
  # yaml-language-server: $schema=PATH/topology.schema.json
The schema checks structure; meridian validate checks everything.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := g.stdout.Write(config.Schema)
			return err
		},
	}
}
