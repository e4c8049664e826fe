package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/meridian-gw/meridian/config"
	"github.com/meridian-gw/meridian/routing"
	"github.com/meridian-gw/meridian/transport"
)

const (
	protoMin = transport.VersionMin
	protoMax = transport.VersionMax
)

func newValidateCmd(g *globals) *cobra.Command {
	var file, output string
	cmd := &cobra.Command{
		Use:   "validate -f FILE",
		Short: "Check a topology file and print every problem as file:line:col: path: reason",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			sum, err := validateFile(file)
			if output == "json" {
				out := map[string]any{"ok": err == nil, "file": file}
				if err != nil {
					var errs config.Errors
					if !errors.As(err, &errs) {
						// Not a problem at a position (unreadable file, say):
						// the same shape, naming the file only.
						errs = config.Errors{{File: file, Reason: err.Error()}}
					}
					out["problems"] = errs
				} else {
					out["summary"] = sum
				}
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				_ = enc.Encode(out)
				if err != nil {
					return &exitError{1, nil}
				}
				return nil
			}
			if err != nil {
				fmt.Fprintln(g.stdout, err)
				return &exitError{1, nil}
			}
			fmt.Fprintf(g.stdout, "ok: %s: %d regions, %d clusters, %d gateways, %d links, %d routes (%d legs)\n",
				file, sum.Regions, sum.Clusters, sum.Gateways, sum.Links, sum.Routes, sum.Legs)
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "topology file (required)")
	_ = cmd.MarkFlagRequired("file")
	outputFlag(cmd, &output)
	return cmd
}

type summary struct {
	Regions  int `json:"regions"`
	Clusters int `json:"clusters"`
	Gateways int `json:"gateways"`
	Links    int `json:"links"`
	Routes   int `json:"routes"`
	Legs     int `json:"legs"`
}

// validateFile runs the same steps as `run` short of starting anything:
// load and validate the file, resolve the topology, compile every gateway's
// forwarding table.
func validateFile(path string) (summary, error) {
	topo, err := loadTopology(path)
	if err != nil {
		return summary{}, err
	}
	s := summary{Regions: len(topo.Regions), Clusters: len(topo.Clusters), Gateways: len(topo.Gateways), Links: len(topo.Links), Routes: len(topo.Routes)}
	for _, r := range topo.Routes {
		s.Legs += len(r.To)
	}
	for name := range topo.Gateways {
		if _, err := routing.Compile(topo, name); err != nil {
			return summary{}, fmt.Errorf("%s: gateway %s: %w", path, name, err)
		}
	}
	return s, nil
}
