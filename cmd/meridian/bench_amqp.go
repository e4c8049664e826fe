package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/meridian-gw/meridian/chaos/lab"
)

func newBenchAMQPCmd(g *globals) *cobra.Command {
	var o lab.AMQPBenchOptions
	var output, codecs, cpuProfile string
	cmd := &cobra.Command{
		Use:   "amqp",
		Short: "An AMQP 1.0 link session through a broker vs a plain go-amqp producer->consumer loop with the same message size, same broker, same run",
		Long: `amqp measures the AMQP link binding (transport/amqp) as the engine drives it
(4 sending pipelines, acknowledgements every 16 batches, messages settled
on the Ack) against a plain go-amqp loop sending messages of the link's wire
size (64 in flight, credit 256 granted by hand, accepted on receipt), alternately, on one
broker: --broker URL, or by default a RabbitMQ node of its own (Debian's
rabbitmq-server) started for the run. Per codec it reports the median of
--runs runs: messages per second (the broker's work per message is the same)
and goodput (the records' raw bytes the link delivers per second, over the
bytes per second the broker accepted from the plain loop).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.start(output)
			if err != nil {
				return err
			}
			o.Logger = log
			if output == "text" {
				o.Out = g.stdout
			}
			if o.Codecs, err = lab.ParseCodecs(codecs); err != nil {
				return &exitError{2, fmt.Errorf("bench amqp: --codecs: %w", err)}
			}
			stop, err := startCPUProfile(cpuProfile)
			if err != nil {
				return err
			}
			defer stop()
			res, err := lab.RunAMQPBench(cmd.Context(), o)
			if err != nil {
				return &exitError{1, fmt.Errorf("bench amqp: %w", err)}
			}
			if output == "json" {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			fmt.Fprintf(g.stdout, "\n%s, %d messages per contender and run, median of %d runs\n", res.Broker, res.Messages, res.Runs)
			tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "codec\tbytes/msg (raw)\tplain msg/s\tlink msg/s\tmsg ratio\tplain MB/s\tlink raw MB/s\tgoodput ratio\tlink cores\texact")
			exact := true
			for _, c := range res.Codecs {
				fmt.Fprintf(tw, "%s\t%d (%d)\t%.0f\t%.0f\t%.2f\t%.1f\t%.1f\t%.2f\t%.2f\t%v\n", c.Codec, c.WireBytes, c.RawBytes,
					c.Plain.MsgPerSec, c.Link.MsgPerSec, c.MsgRatio, c.Plain.WireMBPerS, c.Link.RawMBPerSec, c.GoodputRatio, c.Link.Cores, c.Exact)
				exact = exact && c.Exact
			}
			tw.Flush()
			if !exact {
				return &exitError{1, fmt.Errorf("bench amqp: a link batch was lost, duplicated or out of order")}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&o.BrokerURL, "broker", "", "AMQP 1.0 broker URL with /queue/NAME addresses (default: start a RabbitMQ node of its own)")
	cmd.Flags().IntVar(&o.Messages, "messages", 3000, "messages per contender and run")
	cmd.Flags().IntVar(&o.BatchRaw, "batch-bytes", 64<<10, "raw bytes of a link batch (1 KiB JSON records)")
	cmd.Flags().StringVar(&codecs, "codecs", "zstd,s2,none", "link codecs to measure")
	cmd.Flags().IntVar(&o.Runs, "runs", 3, "runs (the median is reported)")
	cmd.Flags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the whole benchmark to this file")
	outputFlag(cmd, &output)
	return cmd
}
