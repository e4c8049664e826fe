package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/meridian-gw/meridian/internal/gateway"
	"github.com/meridian-gw/meridian/mirror"
)

func newStatusCmd(g *globals) *cobra.Command {
	var output string
	ac := &adminClient{defaultAddr: "127.0.0.1:9180"}
	cmd := &cobra.Command{
		Use:   "status --admin ADDR",
		Short: "Show a running gateway's peers and legs (from its admin /status)",
		Long: `status reads a gateway's admin /status and, when the gateway gossips, the
whole fleet from its /v1/members: every region's members and the health of
every leg wherever it runs (as gossiped). When the gateway's admin API
requires authentication it sends the token ($` + adminTokenEnv + ` or --token-file)
or a client certificate (--cert, --key, --ca; https).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			st, raw, err := fetchStatus(cmd.Context(), ac)
			if err != nil {
				return &exitError{1, err}
			}
			if output == "json" {
				_, err := g.stdout.Write(raw)
				return err
			}
			renderStatus(g.stdout, st)
			// The fleet as gossip shows it, when the gateway gossips.
			if code, raw, err := ac.do(cmd.Context(), "members", http.MethodGet, "/v1/members", nil, 10*time.Second); err == nil && code == http.StatusOK {
				var ms gateway.MembersJSON
				if json.Unmarshal(raw, &ms) == nil {
					fmt.Fprintln(g.stdout)
					renderFleet(g.stdout, &ms, time.Now())
				}
			}
			return nil
		},
	}
	ac.flags(cmd)
	outputFlag(cmd, &output)
	return cmd
}

func fetchStatus(ctx context.Context, ac *adminClient) (*mirror.Status, []byte, error) {
	code, raw, err := ac.do(ctx, "status", http.MethodGet, "/status", nil, 10*time.Second)
	if err != nil {
		return nil, nil, err
	}
	if code != http.StatusOK {
		return nil, nil, fmt.Errorf("status %s: HTTP %d: %s", ac.addr, code, strings.TrimSpace(string(raw)))
	}
	var st mirror.Status
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, nil, fmt.Errorf("status %s: not a meridian status: %w", ac.addr, err)
	}
	return &st, raw, nil
}

func renderStatus(w io.Writer, st *mirror.Status) {
	fmt.Fprintf(w, "gateway %s (region %s), up %s\n\n", st.Gateway, st.Region, (time.Duration(st.UptimeSeconds) * time.Second).String())
	if len(st.Peers) > 0 {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "PEER\tADDRESS\tLINK\tPROFILE\tCONNECTED\tRTT\tFAILURES\tLAST ERROR")
		for _, p := range st.Peers {
			link := p.Link
			if p.Passthrough {
				link += " (passthrough)"
			}
			if p.DialledBy != "" {
				link += ", dialled by " + p.DialledBy
			}
			if p.Path != "" && p.Path != "direct" {
				link += ", down: legs " + p.Path // relays.md
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%.1fms\t%d\t%s\n", p.Gateway, p.Address, link, p.Profile, p.Connected, p.RTTMillis, p.Failures, p.LastError)
		}
		tw.Flush()
		fmt.Fprintln(w)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "LEG\tDIR\tPEER\tPATH\tCONNECTED\tRECORDS\tRAW\tWIRE\tRATIO\tFILTERED\tLOOPS\tLAG\tLAG(s)\tDLQ\tTXN FAILS\tLOST AT SOURCE\tLAST ERROR")
	for _, l := range st.Legs {
		ratio := "-"
		if l.WireBytes > 0 {
			ratio = fmt.Sprintf("%.2f", float64(l.RawBytes)/float64(l.WireBytes))
		}
		filtered := "-"
		if l.Filter != "" && l.Direction == "out" {
			filtered = fmt.Sprintf("%d (%s)", l.FilteredRecords, humanBytes(l.FilteredBytes))
		}
		// Records not sent back where they had been (docs/active-active.md).
		loops := "-"
		if l.Direction == "out" {
			loops = strconv.FormatInt(l.LoopDroppedRecords, 10)
		}
		path := l.Path
		if path == "" {
			path = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%d\t%s\t%s\t%s\t%s\t%s\t%d\t%.1f\t%d\t%d\t%d\t%s\n", l.Leg, l.Direction, l.Peer, path, l.Connected,
			l.Records, humanBytes(l.RawBytes), humanBytes(l.WireBytes), ratio, filtered, loops, l.LagRecords, l.LagSeconds, l.DeadLetters,
			l.FailedTxns, l.SourceGapRecords, l.LastError)
	}
	tw.Flush()
	sep := "\n"
	for _, l := range st.Legs {
		if l.Filter != "" && l.Direction == "out" {
			fmt.Fprintf(w, "%sleg %s: filter %s: %d records (%s) filtered out, %d of them filter errors (no match)",
				sep, l.Leg, strings.Join(strings.Fields(l.Filter), " "), l.FilteredRecords, humanBytes(l.FilteredBytes), l.FilterErrors)
			if l.LastFilterError != "" {
				fmt.Fprintf(w, ", latest: %s", l.LastFilterError)
			}
			fmt.Fprintln(w)
			sep = ""
		}
		if l.PathSwitches > 0 && l.Direction == "out" {
			// Relays around a down direct link (docs/relays.md).
			fmt.Fprintf(w, "%sleg %s: %s since %s, %d path switches", sep, l.Leg, l.Path, l.PathSince, l.PathSwitches)
			if l.RerouteSeconds > 0 {
				fmt.Fprintf(w, ", last reroute %.1fs after its direct link was declared down", l.RerouteSeconds)
			}
			fmt.Fprintln(w)
			sep = ""
		}
		if l.OriginMalformed > 0 && l.Direction == "out" {
			fmt.Fprintf(w, "%sleg %s: %d records carried a malformed meridian.origin header, replaced (sent as produced at the source)\n", sep, l.Leg, l.OriginMalformed)
			sep = ""
		}
		for _, g := range l.SourceGaps {
			fmt.Fprintf(w, "%sleg %s: %s/%d offsets %d-%d (%d records) deleted at the source before they were mirrored, %s\n",
				sep, l.Leg, g.Topic, g.Partition, g.From, g.To-1, g.Records, g.At.UTC().Format(time.RFC3339))
			sep = ""
		}
		if l.ShareGroup != "" && l.Direction == "out" {
			fmt.Fprintf(w, "%sleg %s: shared through consumer group %s; this gateway sends %d partitions: %s\n",
				sep, l.Leg, l.ShareGroup, len(l.SharedPartitions), compactPartitions(l.SharedPartitions))
			sep = ""
		}
		for _, sh := range l.Shares {
			fmt.Fprintf(w, "%sleg %s: %s (group generation %d) sends %d partitions: %s", sep, l.Leg, sh.Gateway, sh.Generation,
				len(sh.Partitions), compactPartitions(sh.Partitions))
			if len(sh.Waiting) > 0 {
				fmt.Fprintf(w, "; waits for %s", compactPartitions(sh.Waiting))
			}
			fmt.Fprintln(w)
			sep = ""
		}
		for _, q := range l.Quarantined {
			fmt.Fprintf(w, "%sleg %s: %s/%d quarantined since %s (%s: %s), %d probes refused, next %s\n",
				sep, l.Leg, q.Topic, q.Partition, q.Since.UTC().Format(time.RFC3339), q.Kind, q.Reason, q.Probes, q.RetryAt.UTC().Format(time.RFC3339))
			sep = ""
		}
	}
}

// compactPartitions writes sorted "topic/partition" names as
// "topic 0-3,7; other 1" ("-" for none).
func compactPartitions(names []string) string {
	if len(names) == 0 {
		return "-"
	}
	byTopic := map[string][]int{}
	var topics []string
	for _, n := range names {
		i := strings.LastIndexByte(n, '/')
		p, err := strconv.Atoi(n[i+1:])
		if i < 0 || err != nil {
			continue
		}
		t := n[:i]
		if _, ok := byTopic[t]; !ok {
			topics = append(topics, t)
		}
		byTopic[t] = append(byTopic[t], p)
	}
	slices.Sort(topics)
	var out []string
	for _, t := range topics {
		ps := byTopic[t]
		slices.Sort(ps)
		var runs []string
		for i := 0; i < len(ps); {
			j := i
			for j+1 < len(ps) && ps[j+1] == ps[j]+1 {
				j++
			}
			if i == j {
				runs = append(runs, strconv.Itoa(ps[i]))
			} else {
				runs = append(runs, fmt.Sprintf("%d-%d", ps[i], ps[j]))
			}
			i = j + 1
		}
		out = append(out, t+" "+strings.Join(runs, ","))
	}
	return strings.Join(out, "; ")
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
