package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/meridian-gw/meridian/chaos"
)

func newChaosCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "chaos",
		Short: "Fault injection for game days: link impairment",
	}
	cmd.AddCommand(newChaosProxyCmd(g), newChaosProfilesCmd(g), newChaosLabCmd(g))
	return cmd
}

func newChaosProfilesCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "profiles",
		Short: "List the named link profiles",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, n := range chaos.ProfileNames() {
				p, err := chaos.LoadProfile(n)
				if err != nil {
					return &exitError{1, err}
				}
				fmt.Fprintf(g.stdout, "%-16s %s\n", n, p.String())
			}
			return nil
		},
	}
}

func newChaosProxyCmd(g *globals) *cobra.Command {
	var listen, target string
	var pf profileFlags
	var seed uint64
	var statsEvery time.Duration
	cmd := &cobra.Command{
		Use:   "proxy --target HOST:PORT --profile NAME",
		Short: "Run a UDP impairment proxy in front of a gateway's QUIC link address",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return &exitError{2, err}
			}
			p, err := pf.resolve(cmd)
			if err != nil {
				return &exitError{1, err}
			}
			px, err := chaos.NewUDPProxy(chaos.UDPProxyOptions{Listen: listen, Target: target, Profile: p, Seed: seed, Logger: log})
			if err != nil {
				return &exitError{1, err}
			}
			defer px.Close()
			fmt.Fprintf(g.stdout, "proxy %s -> %s, profile %s (seed %d)\n", px.Addr(), target, p, px.Seed())
			t := time.NewTicker(statsEvery)
			defer t.Stop()
			for {
				select {
				case <-cmd.Context().Done():
					return nil
				case <-t.C:
					b, _ := json.Marshal(px.Stats())
					fmt.Fprintln(g.stdout, string(b))
				}
			}
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:0", "UDP address to listen on")
	cmd.Flags().StringVar(&target, "target", "", "UDP address of the real peer (required)")
	pf.register(cmd, "wan")
	cmd.Flags().Uint64Var(&seed, "seed", 0, "random seed (0: random)")
	cmd.Flags().DurationVar(&statsEvery, "stats-every", 5*time.Second, "print counters this often")
	_ = cmd.MarkFlagRequired("target")
	return cmd
}
