package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/meridian-gw/meridian/mirror/dr"
	"github.com/meridian-gw/meridian/mirror/progress"
)

func newOffsetsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "offsets",
		Short: "Exact source-to-destination offset translation",
	}
	cmd.AddCommand(newOffsetsTranslateCmd(g))
	return cmd
}

// legTranslation is one leg's translated group offsets.
type legTranslation struct {
	Leg          string                 `json:"leg"`
	From         string                 `json:"from"`
	To           string                 `json:"to"`
	Group        string                 `json:"group"`
	Translations []progress.Translation `json:"partitions"`
}

func newOffsetsTranslateCmd(g *globals) *cobra.Command {
	var file, route, group, output string
	cmd := &cobra.Command{
		Use:   "translate -f FILE --route R --group G",
		Short: "Translate a consumer group's committed source offsets to each destination of a route",
		Long: `translate reads the group's committed offsets at the route's source cluster and
the route's offset maps at each destination (committed with the mirrored
records), and prints for every partition the destination offset from which a
consumer reads exactly what it has not read: nothing skipped, nothing twice.
Status: exact, caught-up, ahead-of-mirror (the group has read records not yet
mirrored), unmapped (nothing mirrored yet).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, legs, err := routeCommand(g, output, file, route, "")
			if err != nil {
				return err
			}
			var out []legTranslation
			for _, leg := range legs {
				src, dst, err := legClusters(leg, log)
				if err != nil {
					return &exitError{1, err}
				}
				ts, err := dr.TranslateGroup(cmd.Context(), leg, src, dst, group)
				if err != nil {
					return &exitError{1, fmt.Errorf("translate %s: %w", leg.ID, err)}
				}
				out = append(out, legTranslation{Leg: leg.ID, From: leg.From.Ref(), To: leg.To.Ref(), Group: group, Translations: ts})
			}
			if output == "json" {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(out)
			}
			for _, lt := range out {
				fmt.Fprintf(g.stdout, "group %s, %s -> %s\n", lt.Group, lt.From, lt.To)
				tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "TOPIC\tPARTITION\tSOURCE OFFSET\tDEST TOPIC\tDEST OFFSET\tSTATUS\tMIRRORED TO")
				for _, t := range lt.Translations {
					fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%d\t%s\t%d\n", t.Topic, t.Partition, t.Source, t.DestTopic, t.Dest, t.Status, t.Mirrored)
				}
				tw.Flush()
				if len(lt.Translations) == 0 {
					fmt.Fprintf(g.stdout, "(group %s has no committed offsets on topics this route mirrors)\n", group)
				}
				fmt.Fprintln(g.stdout)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "topology file (required)")
	cmd.Flags().StringVar(&route, "route", "", "route name (required)")
	cmd.Flags().StringVar(&group, "group", "", "consumer group at the route's source cluster (required)")
	for _, n := range []string{"file", "route", "group"} {
		_ = cmd.MarkFlagRequired(n)
	}
	outputFlag(cmd, &output)
	return cmd
}
