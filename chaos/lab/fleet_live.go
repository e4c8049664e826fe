package lab

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// eventLog keeps the demo's events (blackouts, stops) for the live view,
// and prints each as a line when the view is off.
type eventLog struct {
	mu    sync.Mutex
	start time.Time
	lines []string
}

func (e *eventLog) add(w io.Writer, print bool, format string, args ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.start.IsZero() {
		e.start = time.Now()
	}
	line := fmt.Sprintf(format, args...)
	e.lines = append(e.lines, time.Now().Format("15:04:05")+"  "+line)
	if print {
		fmt.Fprintln(w, line)
	}
}

func (e *eventLog) last(n int) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.lines[max(0, len(e.lines)-n):])
}

// drawLive redraws the live view: members and their states (as the first
// running gateway with gossip sees them), every running gateway's peers
// (link, connected, RTT), every leg with its records and lag, and the
// latest events.
func (fl *Fleet) drawLive(w io.Writer, elapsed time.Duration, events *eventLog) {
	var b strings.Builder
	b.WriteString("\x1b[H\x1b[2J") // home, clear
	fmt.Fprintf(&b, "meridian fleet demo  %5.1f s  produced %d  committed at destinations %d\n\n", elapsed.Seconds(), fl.Produced(), fl.committed())
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	seen := ""
	for _, name := range fl.names {
		gw := fl.Gateway(name)
		if gw == nil {
			continue
		}
		ms := gw.Members()
		if len(ms) == 0 {
			continue
		}
		seen = name
		fmt.Fprintf(tw, "MEMBER (seen by %s)\tREGION\tSTATE\tSINCE\tRTT\n", seen)
		for _, m := range ms {
			since := "-"
			if !m.Since.IsZero() {
				since = time.Since(m.Since).Round(time.Second).String()
			}
			rtt := "-"
			if m.RTT > 0 {
				rtt = m.RTT.Round(time.Millisecond).String()
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", m.Name, m.Meta.Region, m.State, since, rtt)
		}
		break
	}
	if seen == "" {
		fmt.Fprintln(tw, "MEMBERS\t(no gossip in this topology)")
	}
	tw.Flush()
	b.WriteString("\n")
	tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "GATEWAY\tPEER\tLINK\tCONNECTED\tRTT")
	for _, name := range fl.names {
		gw := fl.Gateway(name)
		if gw == nil {
			fmt.Fprintf(tw, "%s\t-\t-\tstopped\t-\n", name)
			continue
		}
		for _, p := range gw.Status().Peers {
			peer := p.Gateway
			if p.Standby != "" {
				peer = p.Standby + " (standby for " + p.Gateway + ")"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%.0f ms\n", name, peer, p.Link, p.Connected, p.RTTMillis)
		}
	}
	tw.Flush()
	b.WriteString("\n")
	tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "LEG\tDIR\tGATEWAY\tPEER\tRECORDS\tLAG\tLAG(s)\tPARTITIONS")
	for _, name := range fl.names {
		gw := fl.Gateway(name)
		if gw == nil {
			continue
		}
		for _, l := range gw.Status().Legs {
			parts := "-"
			switch {
			case l.Direction == "out" && l.ShareGroup != "":
				parts = fmt.Sprintf("%d shared", len(l.SharedPartitions))
			case l.Direction == "in" && len(l.Shares) > 0:
				var ss []string
				for _, sh := range l.Shares {
					ss = append(ss, fmt.Sprintf("%s:%d", sh.Gateway, len(sh.Partitions)))
				}
				parts = strings.Join(ss, " ")
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%.1f\t%s\n", l.Leg, l.Direction, name, l.Peer, l.Records, l.LagRecords, l.LagSeconds, parts)
		}
	}
	tw.Flush()
	if ev := events.last(6); len(ev) > 0 {
		b.WriteString("\nEVENTS\n")
		for _, e := range ev {
			b.WriteString("  " + e + "\n")
		}
	}
	_, _ = io.WriteString(w, b.String())
}
