package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime/pprof"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/meridian-gw/meridian/chaos/lab"
)

func newBenchCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Benchmarks measured against a baseline in the same run",
	}
	cmd.AddCommand(newBenchMirrorCmd(g), newBenchLinkCmd(g), newBenchMM2Cmd(g), newBenchAMQPCmd(g))
	return cmd
}

// startCPUProfile writes a CPU profile of the process to path until stop
// is called ("": none).
func startCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, &exitError{1, err}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, &exitError{1, err}
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

func newBenchMirrorCmd(g *globals) *cobra.Command {
	var o lab.BenchOptions
	var output, cpuProfile, kafka string
	cmd := &cobra.Command{
		Use:   "mirror",
		Short: "Meridian between two in-process Kafka clusters over loopback QUIC vs a direct franz-go consume->produce loop",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.start(output)
			if err != nil {
				return err
			}
			o.Logger = log
			if output == "text" {
				o.Out = g.stdout
			}
			stop, err := startCPUProfile(cpuProfile)
			if err != nil {
				return err
			}
			defer stop()
			run := lab.RunMirrorBench
			switch kafka {
			case "kfake":
			case "real":
				run = lab.RunMirrorBenchReal
			default:
				return &exitError{2, fmt.Errorf("bench mirror: --kafka %q: want kfake or real", kafka)}
			}
			res, err := run(cmd.Context(), o)
			if err != nil {
				return &exitError{1, fmt.Errorf("bench mirror: %w", err)}
			}
			if output == "json" {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
			mode := "records"
			if res.Passthrough {
				mode = "passthrough"
			}
			fmt.Fprintf(tw, "\n%d records, %.1f MB, %s link, %s, %s, median of %d runs\n", res.Records, float64(res.Bytes)/1e6, res.Compression, mode, res.Kafka, len(res.Meridian))
			fmt.Fprintln(tw, "\tseconds\trecords/s\tMB/s\tstartup s\tsteady records/s")
			for _, r := range []struct {
				name string
				f    lab.Figures
			}{{"baseline (franz-go consume->produce, " + res.BaselineKind + ")", res.BaselineMedian}, {"meridian (QUIC, exactly once)", res.MeridianMedian}} {
				fmt.Fprintf(tw, "%s\t%.2f\t%.0f\t%.1f\t%.2f\t%.0f\n", r.name, r.f.Seconds, r.f.RecordsPerSec, r.f.MBPerSec, r.f.StartupSeconds, r.f.SteadyRecordsPerSec)
			}
			tw.Flush()
			ratio := 0.0
			if res.WireBytes > 0 {
				ratio = float64(res.RawBytes) / float64(res.WireBytes)
			}
			fmt.Fprintf(g.stdout, "ratio meridian/baseline: %.2f end to end, %.2f steady state (target >= 0.90); link compression %.2fx; read-back exact: %v\n",
				res.Ratio, res.SteadyRatio, ratio, res.Verified)
			if !res.Verified {
				return &exitError{1, fmt.Errorf("bench mirror: read-back found the mirror not exact")}
			}
			return nil
		},
	}
	cmd.Flags().Int64Var(&o.Records, "records", 200_000, "records per run")
	cmd.Flags().IntVar(&o.ValueSize, "value-size", 0, "pad values to about this many bytes (0: natural JSON events, ~200-350 B)")
	cmd.Flags().IntVar(&o.Topics, "topics", 3, "topics")
	cmd.Flags().Int32Var(&o.Partitions, "partitions", 4, "partitions per topic")
	cmd.Flags().StringVar(&o.Compression, "compression", "zstd", "link compression: none, zstd, s2")
	cmd.Flags().BoolVar(&o.Transactional, "transactional-baseline", false, "make the baseline exactly once: each fetch copied in a transaction (default: an async producer, at least once)")
	cmd.Flags().BoolVar(&o.Passthrough, "passthrough", false, "forward Kafka record batches byte for byte (link passthrough)")
	cmd.Flags().DurationVar(&o.ProduceLatency, "produce-latency", 0, "delay every produce request at the destination cluster, as acks=all replication does (both contenders)")
	cmd.Flags().IntVar(&o.Runs, "runs", 3, "runs (the median is reported)")
	cmd.Flags().StringVar(&kafka, "kafka", "kfake", "the clusters: kfake (in process) or real (two Apache Kafka brokers from the jar cache, full JIT)")
	cmd.Flags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the whole benchmark to this file")
	outputFlag(cmd, &output)
	return cmd
}
