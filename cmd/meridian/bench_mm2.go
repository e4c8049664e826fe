package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/meridian-gw/meridian/chaos/lab"
)

func newBenchMM2Cmd(g *globals) *cobra.Command {
	var (
		o       lab.MM2BenchOptions
		mm2Conf map[string]string
		output  string
	)
	cmd := &cobra.Command{
		Use:   "mm2",
		Short: "Meridian (record mode, passthrough) vs real Apache MirrorMaker 2 between two real Apache Kafka clusters, same records, same run",
		Long: `mm2 starts two single-node Apache Kafka clusters on 127.0.0.1 from the jar cache
(internal/kafkatest/resolve.sh, or make kafka-jars) and, in each run, fills
fresh source topics with the same records, then mirrors them with each
contender in turn into its own destination topics:

  meridian-records      two gateways in this process over loopback QUIC, exactly once
  meridian-passthrough  the same, forwarding Kafka record batches as they are
  mm2                   Apache MirrorMaker 2, dedicated mode (its own JVM), at least once

Each is timed from its start until the destination holds every record (end
to end, start-up included; steady state from the first record), then read
back. Ratios are meridian over mm2. --offsets adds the failover row (records
re-read or skipped by consumer groups at lags 0, 1,000, 100,000) and --sync
the new-topic and group-sync delays. Brokers and MirrorMaker run with full
JIT; all share this machine's cores with the gateways.`,
		Example: `  meridian bench mm2
  meridian bench mm2 --records 500000 --runs 3
  meridian bench mm2 --offsets --sync -o json
  meridian bench mm2 --mm2-config a.consumer.fetch.max.bytes=104857600 --contenders mm2`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.start(output)
			if err != nil {
				return err
			}
			o.Logger, o.MM2Config = log, mm2Conf
			if output == "text" {
				o.Out = g.stdout
			}
			res, err := lab.RunMM2Bench(cmd.Context(), o)
			if err != nil && res == nil {
				return &exitError{1, fmt.Errorf("bench mm2: %w", err)}
			}
			if output == "json" {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				if jerr := enc.Encode(res); jerr != nil {
					return jerr
				}
			} else {
				printMM2Bench(g.stdout, res)
			}
			if err != nil {
				return &exitError{1, fmt.Errorf("bench mm2: %w", err)}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.Int64Var(&o.Records, "records", 200_000, "records per run")
	f.IntVar(&o.ValueSize, "value-size", 0, "pad values to about this many bytes (0: natural JSON events, ~200-350 B)")
	f.IntVar(&o.Topics, "topics", 3, "topics")
	f.Int32Var(&o.Partitions, "partitions", 4, "partitions per topic")
	f.StringVar(&o.Compression, "compression", "zstd", "meridian's link compression: none, zstd, s2")
	f.IntVar(&o.Runs, "runs", 1, "runs (medians are reported; the contenders' order rotates)")
	f.StringSliceVar(&o.Contenders, "contenders", []string{lab.ContenderRecords, lab.ContenderPassthrough, lab.ContenderMM2}, "contenders, in the first run's order")
	f.StringToStringVar(&mm2Conf, "mm2-config", nil, "mm2.properties entries over the defaults (key=value,...)")
	f.StringVar(&o.MM2Heap, "mm2-heap", "512m", "MirrorMaker 2's maximum Java heap")
	f.BoolVar(&o.Offsets, "offsets", false, "also the offsets row: records re-read or skipped after a planned failover")
	f.Int64SliceVar(&o.Lags, "lags", []int64{0, 1000, 100_000}, "consumer group lags for --offsets")
	f.BoolVar(&o.Sync, "sync", false, "also how soon a new topic and a group commit reach the destination")
	f.StringVar(&o.Dir, "dir", "", "keep the clusters' and MirrorMaker's directories (logs, mm2.properties) here")
	outputFlag(cmd, &output)
	return cmd
}

func printMM2Bench(w io.Writer, res *lab.MM2BenchResult) {
	if len(res.Runs) > 0 {
		fmt.Fprintf(w, "\n%d records, %.1f MB per run, meridian link %s, %d run(s), load %s at the start\n",
			res.Records, float64(res.Bytes)/1e6, res.Compression, len(res.Runs), res.Load)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "median\tseconds\trecords/s\tMB/s\tstartup s\tsteady records/s\tCPU s\tbroker CPU s\tratio/mm2\tsteady ratio/mm2\texact")
		exact := map[string]bool{}
		brokerCPU := map[string][]float64{}
		for _, run := range res.Runs {
			for _, r := range run {
				if _, ok := exact[r.Contender]; !ok {
					exact[r.Contender] = true
				}
				exact[r.Contender] = exact[r.Contender] && r.Exact
				brokerCPU[r.Contender] = append(brokerCPU[r.Contender], r.BrokerCPUSeconds)
			}
		}
		for _, c := range []string{lab.ContenderRecords, lab.ContenderPassthrough, lab.ContenderMM2} {
			f, ok := res.Median[c]
			if !ok {
				continue
			}
			ratio, steady := "", ""
			if r, ok := res.Ratio[c]; ok {
				ratio, steady = fmt.Sprintf("%.2f", r), fmt.Sprintf("%.2f", res.SteadyRatio[c])
			}
			slices.Sort(brokerCPU[c])
			fmt.Fprintf(tw, "%s\t%.2f\t%.0f\t%.1f\t%.2f\t%.0f\t%.1f\t%.1f\t%s\t%s\t%v\n", c, f.Seconds, f.RecordsPerSec, f.MBPerSec,
				f.StartupSeconds, f.SteadyRecordsPerSec, f.CPUSeconds, brokerCPU[c][len(brokerCPU[c])/2], ratio, steady, exact[c])
		}
		tw.Flush()
		for i, run := range res.Runs {
			for _, r := range run {
				if !r.Exact {
					fmt.Fprintf(w, "run %d %s read back: %s\n", i+1, r.Contender, r.Report)
				}
				if r.MM2RSSMB > 0 {
					fmt.Fprintf(w, "run %d mm2: JVM RSS %.0f MB at the end, %.1f CPU s\n", i+1, r.MM2RSSMB, r.MM2CPUSeconds)
				}
			}
		}
	}
	printMM2Offsets(w, res)
}

func printMM2Offsets(w io.Writer, res *lab.MM2BenchResult) {
	if len(res.Offsets) > 0 {
		fmt.Fprintln(w, "\nafter a planned failover (producers stopped, mirrors caught up, offsets at the destination unchanged for 10 s;")
		fmt.Fprintf(w, "then meridian's failover: drain, fence, final group sync, %.2f s), a consumer reads from the group's\n", res.FailoverSeconds)
		fmt.Fprintln(w, "destination offsets to the end:")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "group lag\tmeridian re-read\tmeridian skipped\tmm2 re-read\tmm2 skipped\tmm2 partitions without offset")
		type pair struct{ m, mm lab.OffsetRow }
		byLag := map[int64]*pair{}
		var lags []int64
		for _, r := range res.Offsets {
			p := byLag[r.Lag]
			if p == nil {
				p = &pair{}
				byLag[r.Lag] = p
				lags = append(lags, r.Lag)
			}
			if r.Contender == lab.ContenderMM2 {
				p.mm = r
			} else {
				p.m = r
			}
		}
		slices.Sort(lags)
		for _, l := range lags {
			p := byLag[l]
			fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%d\n", l, p.m.ReRead, p.m.Skipped, p.mm.ReRead, p.mm.Skipped, p.mm.NoOffset)
		}
		tw.Flush()
	}
	if s := res.Sync; s != nil {
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "\tnew topic s\tits first record s\tgroup sync p50 s\tp99 s\tmax s\tunresolved of %d commits\n", s.Commits)
		for _, c := range []string{lab.ContenderRecords, lab.ContenderMM2} {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\n", c, secs(s.NewTopic, c), secs(s.NewTopicRecord, c),
				secs(s.SyncP50, c), secs(s.SyncP99, c), secs(s.SyncMax, c), s.Unresolved[c])
		}
		tw.Flush()
		m, mm := s.SyncP99[lab.ContenderRecords], s.SyncP99[lab.ContenderMM2]
		if m > 0 && mm > 0 {
			fmt.Fprintf(w, "group sync p99, mm2/meridian: %.1fx\n", mm/m)
		}
	}
}

func secs(m map[string]float64, c string) string {
	if v, ok := m[c]; ok {
		return fmt.Sprintf("%.2f", v)
	}
	return "-"
}
