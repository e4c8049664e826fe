package lab

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// Blackout blacks out one link's impairment proxies For long, At after
// production starts.
type Blackout struct {
	Link    string
	At, For time.Duration
}

// ParseBlackout reads LINK:AT:FOR, such as vessel-7--hq:5s:3s.
func ParseBlackout(s string) (Blackout, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 || parts[0] == "" {
		return Blackout{}, fmt.Errorf("blackout %q: want LINK:AT:FOR, e.g. vessel-7--hq:5s:3s", s)
	}
	at, err := time.ParseDuration(parts[1])
	if err != nil {
		return Blackout{}, fmt.Errorf("blackout %q: AT: %w", s, err)
	}
	d, err := time.ParseDuration(parts[2])
	if err != nil || d <= 0 {
		return Blackout{}, fmt.Errorf("blackout %q: FOR must be a positive duration", s)
	}
	return Blackout{Link: parts[0], At: at, For: d}, nil
}

// Stop stops one gateway At after production starts (and, with For,
// starts it again For later): a gateway that dies mid-stream.
type Stop struct {
	Gateway string
	At, For time.Duration
}

// ParseStop reads GATEWAY:AT or GATEWAY:AT:FOR, such as hq-a:12s or
// hq-a:12s:10s.
func ParseStop(s string) (Stop, error) {
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" {
		return Stop{}, fmt.Errorf("stop %q: want GATEWAY:AT[:FOR], e.g. hq-a:12s", s)
	}
	at, err := time.ParseDuration(parts[1])
	if err != nil {
		return Stop{}, fmt.Errorf("stop %q: AT: %w", s, err)
	}
	st := Stop{Gateway: parts[0], At: at}
	if len(parts) == 3 {
		if st.For, err = time.ParseDuration(parts[2]); err != nil || st.For <= 0 {
			return Stop{}, fmt.Errorf("stop %q: FOR must be a positive duration", s)
		}
	}
	return st, nil
}

// FleetDemoOptions configure RunFleetDemo.
type FleetDemoOptions struct {
	// File is the topology file to run (required).
	File string
	// Duration of production; zero produces until ctx ends (Ctrl-C).
	Duration time.Duration
	// Rate in events per second per source cluster (zero: 500).
	Rate int
	// Blackouts during production (nil: none).
	Blackouts []Blackout
	// Stops of gateways during production (nil: none).
	Stops []Stop
	// Live redraws a view of the fleet (members, links, legs) on Out,
	// a terminal, every second instead of printing progress lines.
	Live bool
	// CatchUp bounds the wait for the mirrors after production (zero: 2
	// minutes).
	CatchUp time.Duration
	// Out receives the running topology and progress (nil: discarded).
	Out io.Writer
	// Logger for the gateways; nil discards.
	Logger *slog.Logger
	// TopologyOut is where the running topology file is written, with
	// the run's certificates in the directory certs next to it ("": a new
	// temporary directory, removed when the demo ends).
	TopologyOut string
}

// FleetSummary is the fleet demo's result, counted by reading every
// route's source and destinations back.
type FleetSummary struct {
	File       string            `json:"file"`
	Topology   string            `json:"running_topology"`
	Admin      map[string]string `json:"admin"`
	Notes      []string          `json:"notes"`
	Blackouts  []string          `json:"blackouts,omitempty"`
	Stops      []string          `json:"stops,omitempty"`
	Routes     []RouteReport     `json:"routes"`
	Links      []LinkSummary     `json:"links"`
	Produced   int64             `json:"produced"` // records the producers wrote
	Seconds    float64           `json:"seconds"`
	Exact      bool              `json:"exact"`
	NotExactBy []string          `json:"not_exact,omitempty"` // the legs that are not, "route→cluster"
}

// LinkSummary is what one impairment proxy of a link carried and dropped.
type LinkSummary struct {
	Link            string `json:"link"`
	Proxy           string `json:"proxy"`
	Packets         uint64 `json:"packets"` // delivered, both directions
	DroppedLoss     uint64 `json:"dropped_loss"`
	DroppedBlackout uint64 `json:"dropped_blackout"`
}

// LinkStats are the fleet's impairment proxies' counters, by link name.
func (fl *Fleet) LinkStats() []LinkSummary {
	var ls []LinkSummary
	for _, name := range fl.LinkNames() {
		for _, px := range fl.Proxies(name) {
			st := px.Stats()
			ls = append(ls, LinkSummary{Link: name, Proxy: px.Addr().String(), Packets: st.Up.Packets + st.Down.Packets,
				DroppedLoss:     st.Up.Dropped.Loss + st.Down.Dropped.Loss,
				DroppedBlackout: st.Up.Dropped.Blackout + st.Down.Dropped.Blackout})
		}
	}
	return ls
}

// RunFleetDemo runs a topology file in one process (NewFleet), produces
// JSON events into topics every route matches, applies the blackouts, and
// reads every route back. ctx ending stops production; the demo still
// lets the mirrors catch up and reads back.
func RunFleetDemo(ctx context.Context, o FleetDemoOptions) (*FleetSummary, error) {
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.CatchUp == 0 {
		o.CatchUp = 2 * time.Minute
	}
	start := time.Now()
	f, envs, err := LoadFleetFile(o.File)
	if err != nil {
		return nil, err
	}
	fl, err := NewFleet(f, FleetOptions{Logger: o.Logger})
	if err != nil {
		return nil, err
	}
	if len(envs) > 0 {
		fl.Notes = append(fl.Notes, fmt.Sprintf("${%s} generated for this run", strings.Join(envs, "}, ${")))
	}
	defer func() {
		cstart := time.Now()
		fl.Close()
		fmt.Fprintf(o.Out, "fleet stopped in %.1f s\n", time.Since(cstart).Seconds())
	}()
	for _, b := range o.Blackouts {
		if len(fl.Proxies(b.Link)) == 0 {
			return nil, fmt.Errorf("blackout: no link %q with a proxy (links: %s)", b.Link, strings.Join(fl.LinkNames(), ", "))
		}
	}
	for _, st := range o.Stops {
		if !slices.Contains(fl.names, st.Gateway) {
			return nil, fmt.Errorf("stop: no gateway %q (gateways: %s)", st.Gateway, strings.Join(fl.names, ", "))
		}
	}
	topoPath := o.TopologyOut
	if topoPath == "" {
		dir, err := os.MkdirTemp("", "meridian-fleet-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		topoPath = filepath.Join(dir, "topology.yaml")
	}
	if err := fl.WriteFile(topoPath); err != nil {
		return nil, err
	}
	if err := fl.StartAll(); err != nil {
		return nil, err
	}
	fmt.Fprintf(o.Out, "fleet started in %.1f s\n", time.Since(start).Seconds())
	sum := &FleetSummary{File: o.File, Topology: topoPath, Admin: fl.AdminAddrs(), Notes: fl.Notes}
	printFleet(o.Out, fl, topoPath)

	pctx := ctx
	if o.Duration > 0 {
		var cancel context.CancelFunc
		pctx, cancel = context.WithTimeout(ctx, o.Duration)
		defer cancel()
	}
	var wg sync.WaitGroup
	var perr error
	var events eventLog
	wg.Go(func() { perr = fl.Produce(pctx, o.Rate) })
	for _, b := range o.Blackouts {
		wg.Go(func() {
			select {
			case <-pctx.Done():
				return
			case <-time.After(b.At):
			}
			events.add(o.Out, !o.Live, "blackout of link %s for %s", b.Link, b.For)
			_ = fl.Blackout(b.Link, b.For)
		})
		sum.Blackouts = append(sum.Blackouts, fmt.Sprintf("%s:%s:%s", b.Link, b.At, b.For))
	}
	for _, st := range o.Stops {
		wg.Go(func() {
			select {
			case <-pctx.Done():
				return
			case <-time.After(st.At):
			}
			events.add(o.Out, !o.Live, "stopping gateway %s", st.Gateway)
			if err := fl.Stop(st.Gateway); err != nil {
				events.add(o.Out, !o.Live, "stop %s: %v", st.Gateway, err)
				return
			}
			if st.For <= 0 {
				return
			}
			select {
			case <-pctx.Done():
			case <-time.After(st.For):
			}
			events.add(o.Out, !o.Live, "starting gateway %s again", st.Gateway)
			if err := fl.Start(st.Gateway); err != nil {
				events.add(o.Out, !o.Live, "start %s: %v", st.Gateway, err)
			}
		})
		desc := fmt.Sprintf("%s:%s", st.Gateway, st.At)
		if st.For > 0 {
			desc += ":" + st.For.String()
		}
		sum.Stops = append(sum.Stops, desc)
	}
	every := 5 * time.Second
	if o.Live {
		every = time.Second
	}
	t := time.NewTicker(every)
	prodStart := time.Now()
loop:
	for {
		select {
		case <-pctx.Done():
			break loop
		case <-t.C:
			if o.Live {
				fl.drawLive(o.Out, time.Since(prodStart), &events)
				continue
			}
			fmt.Fprintf(o.Out, "produced %8d  committed at destinations %8d\n", fl.Produced(), fl.committed())
		}
	}
	t.Stop()
	wg.Wait()
	if o.Live {
		fl.drawLive(o.Out, time.Since(prodStart), &events)
	}
	if perr != nil {
		return nil, fmt.Errorf("producer: %w", perr)
	}
	sum.Produced = fl.Produced()
	fmt.Fprintf(o.Out, "produced %d; waiting for the mirrors, then reading every route back\n", sum.Produced)
	vctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.CatchUp+time.Minute)
	defer cancel()
	vstart := time.Now()
	sum.Routes = fl.WaitVerified(vctx, o.CatchUp)
	fmt.Fprintf(o.Out, "read back in %.1f s\n", time.Since(vstart).Seconds())
	sum.Links = fl.LinkStats()
	sum.Exact = true
	for i := range sum.Routes {
		if r := &sum.Routes[i]; !r.Exact() {
			sum.Exact = false
			sum.NotExactBy = append(sum.NotExactBy, r.Route+"→"+r.To)
		}
	}
	sum.Seconds = time.Since(start).Seconds()
	return sum, nil
}

// committed sums the records every running gateway's inbound legs
// committed.
func (fl *Fleet) committed() int64 {
	var n int64
	for _, name := range fl.names {
		if gw := fl.Gateway(name); gw != nil {
			for _, s := range gw.Status().Legs {
				if s.Direction == "in" {
					n += s.Records
				}
			}
		}
	}
	return n
}

func printFleet(w io.Writer, fl *Fleet, topoPath string) {
	fmt.Fprintf(w, "running topology (every address on 127.0.0.1): %s\n", topoPath)
	for _, n := range fl.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	var refs []string
	for ref := range fl.Topo.Clusters {
		refs = append(refs, ref)
	}
	slices.Sort(refs)
	for _, ref := range refs {
		fmt.Fprintf(w, "cluster %-20s %s  topics produced: %s\n", ref, strings.Join(fl.Topo.Clusters[ref].Bootstrap, ","), strings.Join(fl.Topics[ref], ", "))
	}
	admin := fl.AdminAddrs()
	for _, name := range fl.names {
		fmt.Fprintf(w, "gateway %-12s admin %s\n", name, admin[name])
	}
	for _, link := range fl.LinkNames() {
		for _, px := range fl.Proxies(link) {
			fmt.Fprintf(w, "link %-14s via impairment proxy %s, profile %s\n", link, px.Addr(), px.Profile())
		}
	}
	if len(fl.names) > 0 {
		a := admin[fl.names[0]]
		fmt.Fprintf(w, "try: meridian status --admin %s; meridian members --admin %s", a, a)
		if len(fl.Topo.Routes) > 0 {
			fmt.Fprintf(w, "; meridian failover --admin ADDR --route %s --dry-run", fl.Topo.Routes[0].Name)
		}
		fmt.Fprint(w, "\n\n")
	}
}
