package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/meridian-gw/meridian/chaos/lab"
)

func newBenchLinkCmd(g *globals) *cobra.Command {
	var (
		pf         profileFlags
		o          lab.LinkBenchOptions
		contenders []string
		output     string
	)
	cmd := &cobra.Command{
		Use:   "link --profile P [--loss X] [--rate R] [--rtt T]",
		Short: "What a link carries: meridian vs the MirrorMaker 2 pattern (Kafka over TCP) in the packet lab (needs root)",
		Long: `link builds the packet-level lab (network namespaces edge and hq joined by the
profile's link, a Kafka cluster in each), fills the edge cluster, and runs each
contender in a fresh lab for --warmup plus --duration:

  meridian  edge and hq gateways over a QUIC link across the emulated link
  tcp       the MirrorMaker 2 pattern: a consumer at hq fetches from the edge
            cluster over TCP across the link and produces locally
  mm2       real Apache MirrorMaker 2 at hq doing the same (needs --kafka real:
            a real broker in each namespace, on its lab address)

For each it prints the goodput (source key and value bytes delivered per
second over --duration, counted by reading the destination), its share of
the link rate, the wire rate, the longest stall, and whether the destination
is an exact prefix of the source; then meridian's goodput over tcp's.
Values are random (incompressible) unless --json.`,
		Example: `  meridian bench link --profile geo-satellite
  meridian bench link --profile geo-satellite --loss 0.05 -o json
  meridian bench link --profile leo-satellite --duration 60s
  meridian bench link --profile geo-satellite --blackout 30s --blackout-at 20s --contenders meridian
  meridian bench link --profile geo-satellite --kafka real --contenders meridian,tcp,mm2 --tcp-cc bbr`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.start(output)
			if err != nil {
				return err
			}
			p, err := pf.resolve(cmd)
			if err != nil {
				return &exitError{1, err}
			}
			o.Profile, o.Logger, o.Contenders = p, log, contenders
			if output == "text" {
				o.Progress = func(s string) { fmt.Fprintln(g.stdout, s) }
			}
			rep, err := lab.RunLinkBench(cmd.Context(), o)
			if err != nil {
				return &exitError{1, fmt.Errorf("bench link: %w", err)}
			}
			if output == "json" {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			fmt.Fprintf(g.stdout, "\nlink %s: %.2f Mbit/s, RTT %v, loss %.2f%%, %s values, TCP %s, Kafka %s, %v measured after %v warm-up\n",
				p, rep.LinkBits/1e6, time.Duration(rep.RTT*float64(time.Second)), 100*rep.Loss, rep.Payload, rep.TCPCC, rep.Kafka, o.Duration, o.Warmup)
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "\tgoodput Mbit/s\tof link\twire Mbit/s\tfirst record s\tlongest stall s\trecovery s\texact\terror")
			for _, r := range rep.Results {
				fmt.Fprintf(tw, "%s\t%.3f\t%.0f%%\t%.3f\t%.2f\t%.2f\t%.2f\t%v\t%s\n", r.Contender, r.GoodputBits/1e6, 100*r.LinkShare,
					r.WireBits/1e6, r.FirstRecord, r.LongestStall, r.Recovery, r.Exact, r.Error)
			}
			tw.Flush()
			if rep.Advantage > 0 {
				fmt.Fprintf(g.stdout, "meridian/tcp goodput: %.1fx\n", rep.Advantage)
			}
			if rep.AdvantageMM2 > 0 {
				fmt.Fprintf(g.stdout, "meridian/mm2 goodput: %.1fx\n", rep.AdvantageMM2)
			}
			return nil
		},
	}
	pf.register(cmd, "geo-satellite")
	f := cmd.Flags()
	f.DurationVar(&o.Duration, "duration", 60*time.Second, "measured time per contender")
	f.DurationVar(&o.Warmup, "warmup", 10*time.Second, "time before measuring (connection set-up, slow start)")
	f.IntVar(&o.ValueSize, "value-size", 1000, "bytes per record value")
	f.BoolVar(&o.JSON, "json", false, "JSON telemetry values (compressible) instead of random bytes")
	f.StringVar(&o.Compression, "compression", "zstd", "meridian's link compression: none, zstd, s2")
	f.StringSliceVar(&contenders, "contenders", []string{lab.ContenderMeridian, lab.ContenderTCP}, "contenders to run, in order")
	f.DurationVar(&o.Blackout, "blackout", 0, "black the link out this long during each run")
	f.DurationVar(&o.BlackoutAt, "blackout-at", 20*time.Second, "when the blackout starts, from the contender's start")
	f.StringVar(&o.TCPCongestion, "tcp-cc", "cubic", "TCP congestion control in the lab (cubic, reno, bbr): what the tcp contender runs under")
	f.Uint64Var(&o.Seed, "seed", 0, "random seed of the impairments (0: random)")
	f.StringVar(&o.Kafka, "kafka", "kfake", "Kafka in each region: kfake (in process) or real (an Apache Kafka broker from the jar cache in each namespace; needed by the mm2 contender)")
	f.BoolVar(&o.KafkaTuned, "kafka-tuned", true, "with real Kafka: socket buffers autotuned at the brokers and in MirrorMaker 2, long request timeouts (Kafka's advice for high latency)")
	f.StringToStringVar(&o.MM2Config, "mm2-config", nil, "mm2.properties entries for the mm2 contender (key=value,...)")
	outputFlag(cmd, &output)
	return cmd
}
