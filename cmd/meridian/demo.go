package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
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
		topo     string
		blackout []string
		stops    []string
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Mirror JSON events between two in-process Kafka regions over an emulated QUIC link",
		Long: `demo runs the embedded default with no external services: two in-process
Kafka clusters (regions edge and hq), a gateway in each joined by a QUIC link
with mutual TLS through a UDP impairment proxy, and a producer of JSON events.
At the end both clusters are read back and compared. With --kafka real the
regions are two Apache Kafka brokers from the jar cache instead
(internal/kafkatest/resolve.sh, or make kafka-jars), on 127.0.0.1.

With --topology FILE it runs any topology file in one process instead:
every cluster of the file becomes an in-process Kafka cluster on 127.0.0.1,
every gateway runs in-process with a certificate from a CA made for the run,
every address moves to a free loopback port (clusters' SASL and TLS and
admin tokens are dropped, and the output says so), and every link runs
through an impairment proxy with its profile. A producer writes JSON events
into topics each route matches; at the end every route is read back at each
destination. The running topology is written to a file whose path is
printed, with each gateway's admin address, for meridian status, members
and failover from another terminal. --blackout LINK:AT:FOR (repeatable)
blacks out a link's proxy for FOR, AT after production starts; --stop
GATEWAY:AT[:FOR] (repeatable) stops a gateway AT after production starts
(and starts it again FOR later). On a terminal a live view of members,
links and legs replaces the progress lines. --rate is
then per source cluster (default 500). Every ${NAME} of the file gets a
value generated for the run, never the environment's; amqp links are
refused (they need a broker).`,
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
			if topo != "" {
				return runFleetDemo(cmd, g, log, topo, duration, rate, blackout, stops, output)
			}
			if len(blackout) > 0 || len(stops) > 0 {
				return &exitError{2, fmt.Errorf("demo: --blackout and --stop need --topology")}
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
	cmd.Flags().StringVar(&topo, "topology", "", "run this topology file in one process instead of the two-region demo")
	cmd.Flags().StringArrayVar(&stops, "stop", nil, "with --topology: stop GATEWAY AT after production starts, and start it again FOR later (GATEWAY:AT[:FOR], repeatable)")
	cmd.Flags().StringArrayVar(&blackout, "blackout", nil, "with --topology: LINK:AT:FOR blacks out a link for FOR, AT after production starts (repeatable)")
	outputFlag(cmd, &output)
	return cmd
}

// runFleetDemo is demo --topology.
func runFleetDemo(cmd *cobra.Command, g *globals, log *slog.Logger, file string, duration time.Duration, rate int, blackouts, stops []string, output string) error {
	if cmd.Flags().Changed("kafka") || cmd.Flags().Changed("profile") {
		return &exitError{2, fmt.Errorf("demo: --kafka and --profile do not apply with --topology (links take their profiles from the file)")}
	}
	var bs []lab.Blackout
	for _, s := range blackouts {
		b, err := lab.ParseBlackout(s)
		if err != nil {
			return &exitError{2, fmt.Errorf("demo: --%w", err)}
		}
		bs = append(bs, b)
	}
	var ss []lab.Stop
	for _, s := range stops {
		st, err := lab.ParseStop(s)
		if err != nil {
			return &exitError{2, fmt.Errorf("demo: --%w", err)}
		}
		ss = append(ss, st)
	}
	if !cmd.Flags().Changed("rate") {
		rate = 0 // the fleet's own default, per source cluster
	}
	out := g.stdout
	if output == "json" {
		out = g.stderr
	}
	if f := cmd.Flag("log-level"); f == nil || !f.Changed {
		// A fleet's gateways log too much to share the terminal with the
		// progress: to a file, named, unless --log-level asks otherwise.
		lf, err := os.CreateTemp("", "meridian-fleet-*.log")
		if err != nil {
			return &exitError{1, fmt.Errorf("demo: %w", err)}
		}
		defer lf.Close()
		log = slog.New(slog.NewTextHandler(lf, &slog.HandlerOptions{Level: slog.LevelInfo}))
		fmt.Fprintf(out, "gateway logs: %s (--log-level LEVEL sends them to stderr)\n", lf.Name())
	}
	sum, err := lab.RunFleetDemo(cmd.Context(), lab.FleetDemoOptions{
		File: file, Duration: duration, Rate: rate, Blackouts: bs, Stops: ss, Out: out, Logger: log,
		Live: output != "json" && isTerminal(out),
	})
	if err != nil {
		return &exitError{1, fmt.Errorf("demo: %w", err)}
	}
	if output == "json" {
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(sum)
	} else {
		fmt.Fprintln(g.stdout)
		for _, r := range sum.Routes {
			state := "exact"
			if !r.Exact() {
				state = "NOT EXACT"
			}
			fmt.Fprintf(g.stdout, "route %s → %s: produced %d, mirrored %d, filtered %d, lost %d, duplicated %d, reordered %d: %s",
				r.Route, r.To, r.Produced, r.Mirrored, r.Filtered, r.Lost, r.Duplicated, r.Reordered, state)
			if r.Err != "" {
				fmt.Fprintf(g.stdout, " (%s)", r.Err)
			}
			fmt.Fprintln(g.stdout)
		}
		for _, l := range sum.Links {
			fmt.Fprintf(g.stdout, "link %s: %d packets, %d lost, %d dropped in blackouts\n", l.Link, l.Packets, l.DroppedLoss, l.DroppedBlackout)
		}
		fmt.Fprintf(g.stdout, "(read back from every source and destination cluster, %.1f s)\n", sum.Seconds)
	}
	if !sum.Exact {
		return &exitError{1, fmt.Errorf("demo: not exact: %s", strings.Join(sum.NotExactBy, ", "))}
	}
	return nil
}

func isTerminal(w any) bool {
	for {
		u, ok := w.(interface{ Unwrap() io.Writer })
		if !ok {
			break
		}
		w = u.Unwrap()
	}
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
