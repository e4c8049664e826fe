package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/meridian-gw/meridian/mirror/dr"
)

func newFailoverCmd(g *globals) *cobra.Command {
	var (
		file, route, to, output string
		dryRun                  bool
		drain                   time.Duration
	)
	ac := &adminClient{purpose: "; the gateway receiving the route fails it over (instead of -f FILE)"}
	cmd := &cobra.Command{
		Use:   "failover (-f FILE | --admin ADDR) --route R",
		Short: "Fail a route over to its destination: drain, fence, final group sync, report",
		Long: `failover moves a route's consumers and producers to its destination cluster(s):
it waits for the mirror to carry what the source has (--drain, skipped when the
source is unreachable), commits the route's consumer groups' translated offsets
at the destination one last time, fences the old direction (a gateway of it
that comes back cannot write), and reports per group and partition the
translated offsets and the records and seconds at risk (RPO).

With --admin ADDR the gateway that receives the route does it through its
admin API (POST /v1/failover), sending the admin token ($` + adminTokenEnv + ` or
--token-file) or an operator certificate (--cert, --key, --ca).

Exit status: 0 done; 2 done, with data at risk; 1 failed, nothing changed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (file == "") == (ac.addr == "") {
				return &exitError{2, fmt.Errorf("failover: give -f FILE or --admin ADDR")}
			}
			if ac.addr != "" {
				return failoverViaAdmin(cmd.Context(), g, ac, output, failoverBody{Route: route, To: to, DryRun: dryRun, Drain: drain.String()}, drain)
			}
			log, legs, err := routeCommand(g, output, file, route, to)
			if err != nil {
				return err
			}
			var reports []*dr.FailoverReport
			for _, leg := range legs {
				src, dst, err := legClusters(leg, log)
				if err != nil {
					return &exitError{1, err}
				}
				o := dr.FailoverOptions{Leg: leg, Src: src, Dst: dst, DryRun: dryRun, Drain: drain}
				if output == "text" && isTerminal(g.stderr) {
					o.Progress = func(n int64) { fmt.Fprintf(g.stderr, "\rdraining %s: %d source offsets to mirror   ", leg.ID, n) }
				}
				rep, err := dr.Failover(cmd.Context(), o)
				if o.Progress != nil {
					fmt.Fprintln(g.stderr)
				}
				if err != nil {
					code := 1
					if rep != nil && rep.Fenced {
						code = 2 // changed, but the report is incomplete
					}
					if errors.Is(err, dr.ErrAlreadyFailedOver) {
						err = fmt.Errorf("%s: %w; nothing changed", leg.ID, err)
					}
					return &exitError{code, fmt.Errorf("failover %s: %w", leg.ID, err)}
				}
				reports = append(reports, rep)
			}
			return printFailover(g, output, reports, dryRun)
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "topology file (required)")
	cmd.Flags().StringVar(&route, "route", "", "route to fail over (required)")
	cmd.Flags().StringVar(&to, "to", "", "only this destination cluster (region/cluster) of the route")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print the plan and the data at risk now; change nothing")
	cmd.Flags().DurationVar(&drain, "drain", 60*time.Second, "how long to wait for the mirror to catch up before fencing")
	_ = cmd.MarkFlagRequired("route")
	ac.flags(cmd)
	outputFlag(cmd, &output)
	return cmd
}

// adminAction POSTs body to a gateway's /v1/ACTION and decodes the
// reports it answers with into reports.
func adminAction(ctx context.Context, ac *adminClient, action string, body failoverBody, timeout time.Duration, reports any) error {
	code, raw, err := ac.do(ctx, action, http.MethodPost, "/v1/"+action, body, timeout)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		var e struct{ Error string }
		if json.Unmarshal(raw, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(raw))
		}
		return fmt.Errorf("%s via %s: HTTP %d: %s", action, ac.addr, code, e.Error)
	}
	if err := json.Unmarshal(raw, reports); err != nil {
		return fmt.Errorf("%s via %s: not a %s report: %w", action, ac.addr, action, err)
	}
	return nil
}

// failoverBody is the JSON body of the admin API's POST /v1/failover and
// /v1/failback.
type failoverBody struct {
	Route  string `json:"route"`
	To     string `json:"to,omitempty"`
	DryRun bool   `json:"dry_run,omitempty"`
	Drain  string `json:"drain,omitempty"`
}

// failoverViaAdmin asks a gateway's admin API to fail the route over and
// prints its reports like a local failover.
func failoverViaAdmin(ctx context.Context, g *globals, ac *adminClient, output string, body failoverBody, drain time.Duration) error {
	if err := checkOutput(output); err != nil {
		return err
	}
	var reports []*dr.FailoverReport
	if err := adminAction(ctx, ac, "failover", body, drain+3*time.Minute, &reports); err != nil {
		return &exitError{1, err}
	}
	return printFailover(g, output, reports, body.DryRun)
}

// printFailover prints failover reports as text or JSON; the exit status
// is 2 when a failover that ran left data at risk.
func printFailover(g *globals, output string, reports []*dr.FailoverReport, dryRun bool) error {
	atRisk := false
	for _, r := range reports {
		atRisk = atRisk || r.RPORecords > 0 || !r.RPOExact
	}
	if output == "json" {
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(reports)
	} else {
		for _, r := range reports {
			renderFailover(g, r)
		}
	}
	if atRisk && !dryRun {
		return &exitError{2, nil}
	}
	return nil
}

func renderFailover(g *globals, r *dr.FailoverReport) {
	w := g.stdout
	mode := "failover"
	if r.DryRun {
		mode = "failover plan (dry run, nothing changed)"
	}
	fmt.Fprintf(w, "%s of route %s: %s -> %s\n", mode, r.Route, r.From, r.To)
	for _, s := range r.Steps {
		fmt.Fprintf(w, "  - %s\n", s)
	}
	exact := "counted at the source"
	if !r.RPOExact {
		exact = "estimated: source unreachable"
	}
	fmt.Fprintf(w, "RPO: %d records, %.1f s (%s)\n", r.RPORecords, r.RPOSeconds, exact)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TOPIC\tPARTITION\tMIRRORED TO\tSOURCE END\tRECORDS AT RISK\tSECONDS AT RISK")
	for _, p := range r.Partitions {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%.1f\n", p.Topic, p.Partition, p.Mirrored, p.SourceEnd, p.RecordsAtRisk, p.SecondsAtRisk)
	}
	tw.Flush()
	for _, gr := range r.Groups {
		state := "committed at " + r.To
		if gr.Active {
			state = "skipped: active at " + r.To
		} else if !gr.Committed {
			state = "nothing to commit"
		}
		fmt.Fprintf(w, "group %s (%s)\n", gr.Group, state)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  TOPIC\tPARTITION\tSOURCE OFFSET\tDEST TOPIC\tDEST OFFSET\tSTATUS")
		for _, t := range gr.Partitions {
			fmt.Fprintf(tw, "  %s\t%d\t%d\t%s\t%d\t%s\n", t.Topic, t.Partition, t.Source, t.DestTopic, t.Dest, t.Status)
		}
		tw.Flush()
	}
	fmt.Fprintln(w)
}

func newFailbackCmd(g *globals) *cobra.Command {
	var (
		file, route, to, output string
		dryRun                  bool
	)
	ac := &adminClient{purpose: "; the gateway receiving the route fails it back (instead of -f FILE)"}
	cmd := &cobra.Command{
		Use:   "failback (-f FILE | --admin ADDR) --route R",
		Short: "Return a failed-over route to its original direction once the old primary is back",
		Long: `failback lists the old primary's records that never reached the new primary
(they are kept there), copies the records produced at the new primary since the
failover back to the old one (same partitions, in order, each tagged with the
header meridian.resynced-from), moves the route's progress past them so nothing
is mirrored twice, moves the route's consumer groups back, and lifts the fence.

With --admin ADDR the gateway that receives the route does it through its
admin API (POST /v1/failback), with the same credentials as failover --admin.

Exit status: 0 done; 1 failed (safe to run again: copies already made are found
by their header and not made twice).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (file == "") == (ac.addr == "") {
				return &exitError{2, fmt.Errorf("failback: give -f FILE or --admin ADDR")}
			}
			var reports []*dr.FailbackReport
			if ac.addr != "" {
				if err := checkOutput(output); err != nil {
					return err
				}
				if err := adminAction(cmd.Context(), ac, "failback", failoverBody{Route: route, To: to, DryRun: dryRun}, 11*time.Minute, &reports); err != nil {
					return &exitError{1, err}
				}
			} else {
				log, legs, err := routeCommand(g, output, file, route, to)
				if err != nil {
					return err
				}
				for _, leg := range legs {
					src, dst, err := legClusters(leg, log)
					if err != nil {
						return &exitError{1, err}
					}
					rep, err := dr.Failback(cmd.Context(), dr.FailbackOptions{Leg: leg, Src: src, Dst: dst, DryRun: dryRun})
					if err != nil {
						return &exitError{1, fmt.Errorf("failback %s: %w", leg.ID, err)}
					}
					reports = append(reports, rep)
				}
			}
			if output == "json" {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(reports)
			}
			for _, r := range reports {
				mode := "failback"
				if r.DryRun {
					mode = "failback plan (dry run, nothing changed)"
				}
				fmt.Fprintf(g.stdout, "%s of leg %s: %s -> %s\n", mode, r.Leg, r.To, r.From)
				for _, s := range r.Steps {
					fmt.Fprintf(g.stdout, "  - %s\n", s)
				}
				if len(r.Stragglers) > 0 {
					fmt.Fprintf(g.stdout, "records of %s that never reached %s (kept at %s):\n", r.From, r.To, r.From)
					tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
					fmt.Fprintln(tw, "  TOPIC\tPARTITION\tOFFSET\tKEY\tTIMESTAMP")
					for _, s := range r.Stragglers {
						fmt.Fprintf(tw, "  %s\t%d\t%d\t%s\t%s\n", s.Topic, s.Partition, s.Offset, s.Key, s.Timestamp.UTC().Format(time.RFC3339Nano))
					}
					tw.Flush()
				}
				fmt.Fprintln(g.stdout)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "topology file (required)")
	cmd.Flags().StringVar(&route, "route", "", "route to fail back (required)")
	cmd.Flags().StringVar(&to, "to", "", "only this destination cluster (region/cluster) of the route")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "list the stragglers and what would be copied; change nothing")
	_ = cmd.MarkFlagRequired("route")
	ac.flags(cmd)
	outputFlag(cmd, &output)
	return cmd
}
