package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meridian-gw/meridian/internal/gateway"
)

func newReloadCmd(g *globals) *cobra.Command {
	var output string
	ac := &adminClient{purpose: " (required)"}
	cmd := &cobra.Command{
		Use:   "reload --admin ADDR",
		Short: "Make a running gateway re-read its topology file (as SIGHUP does) and print what changed or why it was refused",
		Long: `reload asks a running gateway, through its admin API (POST /v1/reload), to
re-read the topology file it was started with: routes and filters added,
changed or removed take effect; a change that cannot apply while the gateway
runs (its addresses, TLS, admin or gossip settings, its region, a link's
transport, a cluster's bootstrap in use) is refused naming the setting, and a
file that does not load is refused with its problems: in both cases the
running configuration stays (docs/reload.md). Reload the receiving gateways
of a new route before its senders.

It sends the admin token ($` + adminTokenEnv + ` or --token-file) or an operator
certificate (--cert, --key, --ca), as failover does.

Exit status: 0 applied (or nothing changed); 1 refused, invalid or failed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if ac.addr == "" {
				return &exitError{2, fmt.Errorf("reload: --admin ADDR is required")}
			}
			res, err := reloadViaAdmin(cmd.Context(), ac)
			if err != nil {
				return &exitError{1, err}
			}
			if output == "json" {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(res); err != nil {
					return &exitError{1, err}
				}
			} else {
				printReload(g, res)
			}
			if !res.OK() {
				return &exitError{1, fmt.Errorf("reload %s: %s; the running configuration stays", res.Outcome, ac.addr)}
			}
			return nil
		},
	}
	ac.flags(cmd)
	outputFlag(cmd, &output)
	return cmd
}

// reloadViaAdmin POSTs /v1/reload and decodes the result: the gateway
// answers 200 (applied, unchanged), 409 (refused) or 400 (invalid) with a
// gateway.ReloadResult, anything else with an error.
func reloadViaAdmin(ctx context.Context, ac *adminClient) (*gateway.ReloadResult, error) {
	code, raw, err := ac.do(ctx, "reload", http.MethodPost, "/v1/reload", struct{}{}, 3*time.Minute)
	if err != nil {
		return nil, err
	}
	var res gateway.ReloadResult
	if code == http.StatusOK || code == http.StatusConflict || code == http.StatusBadRequest {
		if json.Unmarshal(raw, &res) == nil && res.Outcome != "" {
			return &res, nil
		}
	}
	var e struct{ Error string }
	if json.Unmarshal(raw, &e) != nil || e.Error == "" {
		e.Error = strings.TrimSpace(string(raw))
	}
	return nil, fmt.Errorf("reload via %s: HTTP %d: %s", ac.addr, code, e.Error)
}

func printReload(g *globals, res *gateway.ReloadResult) {
	switch {
	case res.Outcome == gateway.ReloadApplied && res.EngineRestarted:
		fmt.Fprintln(g.stdout, "applied: the engine drained and restarted on the new table; every leg resumes from its destination's progress")
	case res.Outcome == gateway.ReloadApplied && len(res.RestartedPeers) > 0:
		fmt.Fprintf(g.stdout, "applied live: restarted the senders to %s alone; every other leg and session kept running\n", strings.Join(res.RestartedPeers, ", "))
	case res.Outcome == gateway.ReloadApplied:
		fmt.Fprintln(g.stdout, "applied live: started and stopped the legs below alone; every other leg and session kept running")
	case res.Outcome == gateway.ReloadUnchanged:
		fmt.Fprintln(g.stdout, "unchanged: the file changes nothing for this gateway")
	default:
		fmt.Fprintf(g.stdout, "%s: the running configuration stays\n", res.Outcome)
	}
	for _, s := range []struct {
		what string
		legs []string
	}{{"added", res.Added}, {"removed", res.Removed}, {"changed", res.Changed}} {
		for _, l := range s.legs {
			fmt.Fprintf(g.stdout, "  %-8s %s\n", s.what, l)
		}
	}
	for _, p := range res.Problems {
		fmt.Fprintf(g.stdout, "  %s\n", p)
	}
}
