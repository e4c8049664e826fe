package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/spf13/cobra"

	"github.com/meridian-gw/meridian/config"
	"github.com/meridian-gw/meridian/internal/gateway"
	"github.com/meridian-gw/meridian/topology"
	"github.com/meridian-gw/meridian/transport"
)

const (
	protoMin = transport.VersionMin
	protoMax = transport.VersionMax
)

func newValidateCmd(g *globals) *cobra.Command {
	var file, output, gateway string
	var requireEnv bool
	cmd := &cobra.Command{
		Use:   "validate -f FILE [--gateway NAME] [--require-env]",
		Short: "Check a topology file and print every problem as file:line:col: path: reason",
		Long: `Validate loads the file and builds every gateway as run does (certificates,
links, codecs), starting nothing and binding nothing. With --gateway NAME, run
on that gateway's host, it also test-binds the gateway's listen and admin
addresses. Settings that are accepted but have no effect yet are printed as
warnings on stderr; they do not fail validation (exit 0 with warnings only).

An unset ${NAME} is a warning here, so that a CI job without the production
secrets can lint topology files (the value stands for itself); run refuses
the file, and --require-env makes validate refuse it too. With -o json,
problems and warnings are both listed with their positions.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			sum, warnings, err := g.validateFile(file, gateway, requireEnv)
			if output != "json" {
				for _, w := range warnings {
					fmt.Fprintln(g.stderr, "warning: "+w.Error())
				}
			}
			if output == "json" {
				out := map[string]any{"ok": err == nil, "file": file}
				if len(warnings) > 0 {
					out["warnings"] = warnings
				}
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
	cmd.Flags().BoolVar(&requireEnv, "require-env", false, "an unset ${NAME} in the file is an error, as in run (default: a warning)")
	cmd.Flags().StringVarP(&gateway, "gateway", "g", "", "also test-bind this gateway's listen and admin addresses (run it on the gateway's host)")
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

// validateFile runs the same steps as `run` short of binding or starting
// anything: load and validate the file, resolve the topology, and build
// every gateway (gateway.New: forwarding table, certificates, link
// dialers). Problems are config.Errors at their settings, all at once.
// When probe names a gateway, its addresses are also test-bound. warnings
// are the file's (config.File.Warnings), also beside problems found after
// the file itself was valid.
func (g *globals) validateFile(path, probe string, requireEnv bool) (s summary, warnings config.Errors, err error) {
	f, topo, err := g.loadFileWith(path, config.Options{UnsetEnvWarns: !requireEnv})
	if err != nil {
		return summary{}, nil, err
	}
	s = summary{Regions: len(topo.Regions), Clusters: len(topo.Clusters), Gateways: len(topo.Gateways), Links: len(topo.Links), Routes: len(topo.Routes)}
	for _, r := range topo.Routes {
		s.Legs += len(r.To)
	}
	if _, ok := topo.Gateways[probe]; probe != "" && !ok {
		return summary{}, nil, fmt.Errorf("%s: --gateway: no gateway %q (gateways: %v)", path, probe, gatewayNames(topo))
	}
	var problems config.Errors
	for _, name := range gatewayNames(topo) {
		gw, err := gateway.New(gateway.Options{Topology: topo, Name: name})
		if err != nil {
			problems = append(problems, placeProblems(f, topo.Gateways[name].Path, err)...)
			continue
		}
		if name == probe {
			for _, se := range gw.ProbeAddrs() {
				problems = append(problems, f.ErrorAt(se.Path, "%v", se.Err))
			}
		}
	}
	if len(problems) > 0 {
		return summary{}, f.Warnings(), problems.Sort()
	}
	return s, f.Warnings(), nil
}

// placeProblems turns an error from gateway.New into problems at their
// settings; one that names no setting is placed at the gateway (at).
func placeProblems(f *config.File, at string, err error) config.Errors {
	var leaves []error
	var walk func(error)
	walk = func(e error) {
		if se, ok := e.(*gateway.SettingError); ok {
			leaves = append(leaves, se)
			return
		}
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, c := range j.Unwrap() {
				walk(c)
			}
			return
		}
		if u := errors.Unwrap(e); u != nil && errors.As(e, new(*gateway.SettingError)) {
			walk(u)
			return
		}
		leaves = append(leaves, e)
	}
	walk(err)
	var out config.Errors
	for _, e := range leaves {
		if se, ok := e.(*gateway.SettingError); ok {
			out = append(out, f.ErrorAt(se.Path, "%v", se.Err))
		} else {
			out = append(out, f.ErrorAt(at, "%v", e))
		}
	}
	return out
}

func gatewayNames(topo *topology.Topology) []string {
	names := make([]string, 0, len(topo.Gateways))
	for n := range topo.Gateways {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
