//go:build !linux

package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// newChaosLabCmd stands in for `chaos lab` where the network lab cannot
// run: it needs Linux network namespaces and TUN devices.
func newChaosLabCmd(*globals) *cobra.Command {
	return &cobra.Command{
		Use:   "lab",
		Short: "Run the packet-level network lab (Linux only)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return &exitError{1, errors.New("chaos lab: needs Linux (network namespaces and TUN devices)")}
		},
	}
}
