package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/meridian-gw/meridian/chaos/lab"
)

func newDemoCmd(g *globals) *cobra.Command {
	var (
		duration time.Duration
		profile  string
		rate     int
		output   string
		kafka    string
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Mirror JSON events between two in-process Kafka regions over an emulated QUIC link",
		Long: `demo runs the embedded default with no external services: two in-process
Kafka clusters (regions edge and hq), a gateway in each joined by a QUIC link
with mutual TLS through a UDP impairment proxy, and a producer of JSON events.
At the end both clusters are read back and compared. With --kafka real the
regions are two Apache Kafka brokers from the jar cache instead
(internal/kafkatest/resolve.sh, or make kafka-jars), on 127.0.0.1.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.start(output)
			if err != nil {
				return err
			}
			out := g.stdout
			if output == "json" {
				out = g.stderr // progress to stderr, the summary alone on stdout
			}
			run := lab.RunDemo
			switch kafka {
			case "kfake":
			case "real":
				run = lab.RunDemoReal
			default:
				return &exitError{2, fmt.Errorf("demo: --kafka %q: want kfake or real", kafka)}
			}
			sum, err := run(cmd.Context(), lab.DemoOptions{
				Duration: duration, Profile: profile, Rate: rate, Out: out,
				Live: isTerminal(out), Logger: log,
			})
			if err != nil {
				return &exitError{1, fmt.Errorf("demo: %w", err)}
			}
			if output == "json" {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				_ = enc.Encode(sum)
			} else {
				fmt.Fprintf(g.stdout, "\nproduced %d, mirrored %d, lost %d, duplicated %d, reordered %d (read back from both clusters)\n",
					sum.Produced, sum.Mirrored, sum.Lost, sum.Duplicated, sum.Reordered)
				ratio := 0.0
				if sum.WireBytes > 0 {
					ratio = float64(sum.RawBytes) / float64(sum.WireBytes)
				}
				fmt.Fprintf(g.stdout, "link: %d raw bytes sent as %d wire bytes (%.1fx), RTT %.0f ms, %.1f s\n",
					sum.RawBytes, sum.WireBytes, ratio, sum.RTTMillis, sum.Seconds)
			}
			if sum.Lost+sum.Duplicated+sum.Reordered+sum.Unexpected > 0 {
				return &exitError{1, fmt.Errorf("demo: the mirror is not exact")}
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&duration, "duration", 30*time.Second, "how long to produce (0: until Ctrl-C)")
	cmd.Flags().StringVar(&profile, "profile", "wan", "link profile (see `meridian chaos profiles`)")
	cmd.Flags().IntVar(&rate, "rate", 2000, "events per second")
	cmd.Flags().StringVar(&kafka, "kafka", "kfake", "the regions' Kafka: kfake (in process) or real (Apache Kafka brokers from the jar cache)")
	outputFlag(cmd, &output)
	return cmd
}

func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
