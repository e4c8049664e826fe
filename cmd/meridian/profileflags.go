package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/meridian-gw/meridian/chaos"
	"github.com/meridian-gw/meridian/topology/profile"
)

// profileFlags are the link-profile flags that chaos proxy, chaos lab and
// bench link share: a named profile and overrides of its loss, rate and RTT.
type profileFlags struct {
	name string
	loss float64
	rate string
	rtt  time.Duration
}

func (f *profileFlags) register(cmd *cobra.Command, def string) {
	cmd.Flags().StringVar(&f.name, "profile", def, "link profile (see `meridian chaos profiles`)")
	cmd.Flags().Float64Var(&f.loss, "loss", 0, "override random loss (0.01 = 1%)")
	cmd.Flags().StringVar(&f.rate, "rate", "", "override the rate limit, e.g. 10Mbit")
	cmd.Flags().DurationVar(&f.rtt, "rtt", 0, "override the round-trip time")
}

// resolve loads the profile and applies the overrides given.
func (f *profileFlags) resolve(cmd *cobra.Command) (*chaos.Profile, error) {
	p, err := chaos.LoadProfile(f.name)
	if err != nil {
		return nil, err
	}
	if cmd.Flags().Changed("loss") {
		p = p.WithLoss(f.loss)
	}
	if f.rate != "" {
		bps, err := profile.ParseRate(f.rate)
		if err != nil {
			return nil, fmt.Errorf("--rate: %w", err)
		}
		p = p.WithRate(bps)
	}
	if f.rtt > 0 {
		p = p.WithRTT(f.rtt)
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}
