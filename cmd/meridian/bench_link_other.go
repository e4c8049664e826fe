//go:build !linux

package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// newBenchLinkCmd stands in for `bench link` where the packet lab cannot
// run: it needs Linux network namespaces and TUN devices.
func newBenchLinkCmd(*globals) *cobra.Command {
	return &cobra.Command{
		Use:   "link",
		Short: "What a link carries, in the packet lab (Linux only)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return &exitError{1, errors.New("bench link: needs Linux (network namespaces and TUN devices)")}
		},
	}
}
