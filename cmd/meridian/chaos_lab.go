//go:build linux

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meridian-gw/meridian/chaos"
	"github.com/meridian-gw/meridian/chaos/netlab"
)

// labInfo is what `chaos lab` prints when the lab is up.
type labInfo struct {
	Seed    uint64       `json:"seed"`
	Regions []labRegion  `json:"regions"`
	Links   []labLinkOut `json:"links"`
}

type labRegion struct {
	Name       string `json:"name"`
	Addr       string `json:"addr"`
	Prefix     string `json:"prefix"`
	Netns      string `json:"netns,omitempty"` // for `ip netns exec`, with --named
	NetnsPath  string `json:"netns_path"`      // for `nsenter --net=`
	ExecPrefix string `json:"exec"`            // prepend to a command to run it inside
}

type labLinkOut struct {
	Name    string `json:"name"`
	Up      string `json:"up"` // "edge -> hq"
	Profile string `json:"profile"`
}

func newChaosLabCmd(g *globals) *cobra.Command {
	var (
		pf         profileFlags
		regions    []string
		named      bool
		prefix     string
		selfTest   bool
		duration   time.Duration
		statsEvery time.Duration
		seed       uint64
		output     string
	)
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "Run the packet-level network lab: network namespaces joined by emulated links (needs root)",
		Long: `lab builds the packet-level network lab: one network namespace per region,
each with a TUN device and one address from 198.18.0.0/15 (region i gets
198.18.<i+1>.1/24), joined by emulated links that delay, drop, rate-limit and
black out IP packets according to a link profile. Any program run inside a
region (kcat, a gateway, curl) crosses the emulated link to reach another.

It prints the regions, their addresses and how to run commands inside, then
per-link counters every --stats-every, until --duration ends or Ctrl-C; then
it removes everything. With --self-test it first measures each link's delay,
loss and rate against the profile (and then exits, unless --duration is
given); a failed self-test makes the exit status 1.`,
		Example: `  meridian chaos lab --profile geo-satellite --named
  ip netns exec meridian-edge kcat -b 198.18.2.1:9092 -L
  meridian chaos lab --rtt 100ms --loss 0.01 --rate 10Mbit --self-test`,
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
			if err := netlab.Check(); err != nil {
				return &exitError{1, fmt.Errorf("chaos lab: %w", err)}
			}
			lab, err := netlab.New(netlab.Options{
				Regions: regions, Profile: p, Seed: seed,
				Named: named, NamePrefix: prefix, Logger: log,
			})
			if err != nil {
				return &exitError{1, fmt.Errorf("chaos lab: %w", err)}
			}
			defer func() {
				if err := lab.Close(); err != nil {
					fmt.Fprintln(g.stderr, "chaos lab: close:", err)
				}
			}()

			out := labOutput{w: g.stdout, json: output == "json"}
			out.info(describeLab(lab))

			failed := false
			if selfTest {
				for _, lk := range lab.Links() {
					rep, err := netlab.SelfTest(cmd.Context(), lab, lk.Name(), netlab.SelfTestOptions{})
					if err != nil {
						if cmd.Context().Err() != nil {
							return nil // interrupted
						}
						return &exitError{1, fmt.Errorf("chaos lab: %w", err)}
					}
					out.selfTest(rep)
					failed = failed || !rep.Pass
				}
				if !cmd.Flags().Changed("duration") {
					return selfTestExit(failed)
				}
			}

			var end <-chan time.Time
			if duration > 0 {
				t := time.NewTimer(duration)
				defer t.Stop()
				end = t.C
			}
			tick := time.NewTicker(statsEvery)
			defer tick.Stop()
			for {
				select {
				case <-cmd.Context().Done():
					out.stats(lab.Stats())
					return selfTestExit(failed)
				case <-end:
					out.stats(lab.Stats())
					return selfTestExit(failed)
				case <-tick.C:
					out.stats(lab.Stats())
				}
			}
		},
	}
	f := cmd.Flags()
	pf.register(cmd, "wan")
	f.StringSliceVar(&regions, "regions", []string{"edge", "hq"}, "region names, in order; links run between every pair, up from the first-named")
	f.BoolVar(&named, "named", false, "also name the namespaces (meridian-<region>) for `ip netns exec`")
	f.StringVar(&prefix, "netns-prefix", netlab.DefaultNamePrefix, "prefix of the named namespaces")
	f.BoolVar(&selfTest, "self-test", false, "measure each link against the profile, print the report and exit (unless --duration is given)")
	f.DurationVar(&duration, "duration", 0, "how long to keep the lab up (0: until Ctrl-C)")
	f.DurationVar(&statsEvery, "stats-every", 5*time.Second, "print link counters this often")
	f.Uint64Var(&seed, "seed", 0, "random seed of the impairments (0: random)")
	outputFlag(cmd, &output)
	_ = f.MarkHidden("netns-prefix")
	return cmd
}

func selfTestExit(failed bool) error {
	if failed {
		return &exitError{1, errors.New("chaos lab: self-test failed")}
	}
	return nil
}

func describeLab(lab *netlab.Lab) labInfo {
	info := labInfo{Seed: lab.Seed()}
	for _, r := range lab.Regions() {
		reg := labRegion{
			Name:      r,
			Addr:      lab.Addr(r).String(),
			Prefix:    lab.Addr(r).String() + "/24",
			Netns:     lab.NamedNamespace(r),
			NetnsPath: lab.NamespacePath(r),
		}
		reg.ExecPrefix = "nsenter --net=" + reg.NetnsPath
		if reg.Netns != "" {
			reg.ExecPrefix = "ip netns exec " + reg.Netns
		}
		info.Regions = append(info.Regions, reg)
	}
	for _, lk := range lab.Links() {
		a, b := lk.Regions()
		info.Links = append(info.Links, labLinkOut{Name: lk.Name(), Up: a + " -> " + b, Profile: lk.Profile().String()})
	}
	return info
}

// labOutput prints either text or one JSON object per line, each with a
// single key: "lab", "self_test" or "stats".
type labOutput struct {
	w    io.Writer
	json bool
}

func (o labOutput) line(key string, v any) {
	b, _ := json.Marshal(map[string]any{key: v})
	fmt.Fprintln(o.w, string(b))
}

func (o labOutput) info(info labInfo) {
	if o.json {
		o.line("lab", info)
		return
	}
	fmt.Fprintf(o.w, "lab up: %d regions, seed %d\n", len(info.Regions), info.Seed)
	for _, r := range info.Regions {
		fmt.Fprintf(o.w, "  region %-10s %-15s netns %s\n", r.Name, r.Prefix, firstNonEmpty(r.Netns, r.NetnsPath))
	}
	for _, l := range info.Links {
		fmt.Fprintf(o.w, "  link   %-21s up: %s; %s\n", l.Name, l.Up, l.Profile)
	}
	fmt.Fprintln(o.w, "run commands inside a region with:")
	for _, r := range info.Regions {
		fmt.Fprintf(o.w, "  %s CMD...\n", r.ExecPrefix)
	}
	if len(info.Regions) > 1 {
		a, b := info.Regions[0], info.Regions[1]
		fmt.Fprintf(o.w, "for example: %s ping -c 3 %s\n", a.ExecPrefix, b.Addr)
	}
	fmt.Fprintln(o.w, "Ctrl-C tears the lab down.")
}

func (o labOutput) selfTest(rep netlab.Report) {
	if o.json {
		o.line("self_test", rep)
		return
	}
	fmt.Fprint(o.w, rep.String())
}

func (o labOutput) stats(s netlab.Stats) {
	if o.json {
		o.line("stats", s)
		return
	}
	now := time.Now().Format(time.TimeOnly)
	for _, l := range s.Links {
		fmt.Fprintf(o.w, "%s %s up %s | down %s\n", now, l.Link, dirLine(l.Up), dirLine(l.Down))
	}
}

func dirLine(d chaos.DirStats) string {
	var drops []string
	for _, x := range []struct {
		name string
		n    uint64
	}{{"loss", d.Dropped.Loss}, {"queue", d.Dropped.Queue}, {"blackout", d.Dropped.Blackout}, {"mtu", d.Dropped.MTU}, {"error", d.Dropped.Error}} {
		if x.n > 0 {
			drops = append(drops, fmt.Sprintf("%s %d", x.name, x.n))
		}
	}
	s := fmt.Sprintf("%d pkts %s", d.Packets, formatBytes(d.Bytes))
	if len(drops) > 0 {
		s += " (dropped: " + strings.Join(drops, ", ") + ")"
	}
	return s
}

func formatBytes(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}
