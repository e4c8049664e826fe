package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/meridian-gw/meridian/internal/gateway"
	"github.com/meridian-gw/meridian/topology/membership"
)

func newMembersCmd(g *globals) *cobra.Command {
	var output string
	ac := &adminClient{defaultAddr: "127.0.0.1:9180"}
	cmd := &cobra.Command{
		Use:   "members --admin ADDR",
		Short: "List every member of the fleet as one gateway sees it (from its admin /v1/members)",
		Long: `members reads a gateway's admin /v1/members: every gateway of the fleet with
its region, state (alive, suspect, dead, left), since when, the link protocol
versions it speaks and how this gateway reaches it (self; direct: a gossip
connection of its own; gossip: only through other members), then the link
health every gateway last gossiped. Authentication as for status.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			code, raw, err := ac.do(cmd.Context(), "members", http.MethodGet, "/v1/members", nil, 10*time.Second)
			if err != nil {
				return &exitError{1, err}
			}
			if code != http.StatusOK {
				if code == http.StatusNotFound {
					return &exitError{1, fmt.Errorf("members %s: this gateway does not gossip (no gossip setting in its topology)", ac.addr)}
				}
				return &exitError{1, fmt.Errorf("members %s: HTTP %d: %s", ac.addr, code, strings.TrimSpace(string(raw)))}
			}
			if output == "json" {
				_, err := g.stdout.Write(raw)
				return err
			}
			var ms gateway.MembersJSON
			if err := json.Unmarshal(raw, &ms); err != nil {
				return &exitError{1, fmt.Errorf("members %s: not a meridian member list: %w", ac.addr, err)}
			}
			renderMembers(g.stdout, &ms, time.Now())
			return nil
		},
	}
	ac.flags(cmd)
	outputFlag(cmd, &output)
	return cmd
}

func renderMembers(w io.Writer, ms *gateway.MembersJSON, now time.Time) {
	fmt.Fprintf(w, "members as gateway %s sees them\n\n", ms.Gateway)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tREGION\tPOOL\tSTATE\tSINCE\tPROTOCOL\tREACH\tRTT\tADDRESS")
	for _, m := range ms.Members {
		since := "-"
		if !m.Since.IsZero() {
			since = fmt.Sprintf("%s (%s ago)", m.Since.UTC().Format(time.RFC3339), now.Sub(m.Since).Round(time.Second))
		}
		rtt := "-"
		if m.RTTMillis > 0 {
			rtt = fmt.Sprintf("%.1fms", m.RTTMillis)
		}
		reach := m.Reach
		if reach == "" {
			reach = "-"
		}
		state := m.State
		switch {
		case m.BadMeta != "":
			state += " (bad metadata: " + m.BadMeta + ")"
		case !m.Compatible:
			state += " (incompatible protocol)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d-%d\t%s\t%s\t%s\n", m.Name, m.Region, m.Pool, state, since, m.ProtoMin, m.ProtoMax, reach, rtt, m.Addr)
	}
	tw.Flush()
	if len(ms.Health) == 0 {
		return
	}
	names := make([]string, 0, len(ms.Health))
	for n := range ms.Health {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintln(w, "\nlink health (gossiped)")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "GATEWAY\tLEG\tPEER\tUP\tRTT\tLOSS\tGOODPUT\tBACKLOG\tAGE")
	for _, n := range names {
		r := ms.Health[n]
		for _, l := range r.Legs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\t%.2f%%\t%s\t%d\t%s\n", n, l.Leg, l.Peer, l.Up, l.RTT.Round(100*time.Microsecond),
				100*l.Loss, formatBitRate(l.Goodput), l.Backlog, now.Sub(r.Received).Round(time.Second))
		}
	}
	tw.Flush()
}

// renderFleet is status's fleet section: per region, its members and
// their states, then every gossiped leg with its health and lag.
func renderFleet(w io.Writer, ms *gateway.MembersJSON, now time.Time) {
	regions := map[string][]string{}
	for _, m := range ms.Members {
		if m.Pool != "fleet" {
			continue
		}
		regions[m.Region] = append(regions[m.Region], m.Name+" "+m.State)
	}
	names := make([]string, 0, len(regions))
	for r := range regions {
		names = append(names, r)
	}
	sort.Strings(names)
	fmt.Fprintf(w, "fleet (gossip, as %s sees it)\n", ms.Gateway)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "REGION\tMEMBERS")
	for _, r := range names {
		fmt.Fprintf(tw, "%s\t%s\n", r, strings.Join(regions[r], ", "))
	}
	tw.Flush()
	if len(ms.Health) == 0 {
		return
	}
	gws := make([]string, 0, len(ms.Health))
	for n := range ms.Health {
		gws = append(gws, n)
	}
	sort.Strings(gws)
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "GATEWAY\tLEG\tPEER\tUP\tRTT\tLOSS\tGOODPUT\tLAG\tAGE")
	for _, n := range gws {
		r := ms.Health[n]
		for _, l := range r.Legs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\t%.2f%%\t%s\t%d\t%s\n", n, l.Leg, l.Peer, l.Up, l.RTT.Round(100*time.Microsecond),
				100*l.Loss, formatBitRate(l.Goodput), l.Backlog, now.Sub(r.Received).Round(time.Second))
		}
	}
	tw.Flush()
}

func formatBitRate(bps int64) string {
	switch {
	case bps >= 1e9:
		return fmt.Sprintf("%.1fGbit/s", float64(bps)/1e9)
	case bps >= 1e6:
		return fmt.Sprintf("%.1fMbit/s", float64(bps)/1e6)
	case bps >= 1e3:
		return fmt.Sprintf("%.1fkbit/s", float64(bps)/1e3)
	}
	return fmt.Sprintf("%dbit/s", bps)
}

// gossipKeyEnv holds the key for `gossip keys install` unless --key-file
// names a file ("-": stdin). A key is never a command-line argument: it
// would show in ps and shell history.
const gossipKeyEnv = "MERIDIAN_GOSSIP_KEY"

func newGossipCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "gossip",
		Short: "Manage gossip at run time",
	}
	keys := &cobra.Command{
		Use:   "keys",
		Short: "Rotate the AES-GCM keys of a gateway's gossip on a plain port, without a restart",
		Long: `keys changes the keyring of one gateway's region gossip (gossip.region)
through its admin API. Rotate in three rounds, each on every gateway of the
region before the next: install the new key, use it, remove the old one.
Keys are named by fingerprint (the first 8 bytes of their SHA-256); install
reads the base64 key from $` + gossipKeyEnv + ` or --key-file (- for stdin).
Then put the new key first in the topology file's gossip.keys, so that a
restart keeps it.`,
	}
	keys.AddCommand(
		gossipKeysCmd(g, "list", "List the keys by fingerprint, the primary first", 0),
		gossipKeysCmd(g, "install", "Install a key: it decrypts from now on (from $"+gossipKeyEnv+" or --key-file)", 0),
		gossipKeysCmd(g, "use", "Encrypt with the installed key FINGERPRINT from now on", 1),
		gossipKeysCmd(g, "remove", "Remove the key FINGERPRINT (not the primary)", 1),
	)
	cmd.AddCommand(keys)
	return cmd
}

func gossipKeysCmd(g *globals, op, short string, nargs int) *cobra.Command {
	var output, keyFile string
	ac := &adminClient{defaultAddr: "127.0.0.1:9180"}
	use := op + " --admin ADDR"
	if nargs == 1 {
		use = op + " FINGERPRINT --admin ADDR"
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ExactArgs(nargs),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			body := map[string]string{"op": op}
			switch op {
			case "install":
				key, err := readGossipKey(keyFile, cmd.InOrStdin())
				if err != nil {
					return &exitError{2, err}
				}
				body["key"] = key
			case "use", "remove":
				body["fingerprint"] = args[0]
			}
			return runGossipKeys(cmd.Context(), g, ac, op, body, output)
		},
	}
	if op == "install" {
		cmd.Flags().StringVar(&keyFile, "key-file", "", "file holding the base64 key, - for stdin (default: $"+gossipKeyEnv+")")
	}
	ac.flags(cmd)
	outputFlag(cmd, &output)
	return cmd
}

func readGossipKey(file string, stdin io.Reader) (string, error) {
	var raw []byte
	var err error
	switch file {
	case "":
		raw = []byte(os.Getenv(gossipKeyEnv))
		if len(raw) == 0 {
			return "", fmt.Errorf("install: no key: set $%s or --key-file", gossipKeyEnv)
		}
	case "-":
		raw, err = io.ReadAll(io.LimitReader(stdin, 4096))
	default:
		raw, err = os.ReadFile(file)
	}
	if err != nil {
		return "", fmt.Errorf("install: --key-file: %w", err)
	}
	return strings.TrimSpace(string(raw)), nil
}

func runGossipKeys(ctx context.Context, g *globals, ac *adminClient, op string, body map[string]string, output string) error {
	code, raw, err := ac.do(ctx, "gossip keys "+op, http.MethodPost, "/v1/gossip/keys", body, 10*time.Second)
	if err != nil {
		return &exitError{1, err}
	}
	var resp struct {
		Gateway string               `json:"gateway"`
		Keys    []membership.KeyInfo `json:"keys"`
		Error   string               `json:"error"`
	}
	_ = json.Unmarshal(raw, &resp)
	if code != http.StatusOK {
		msg := resp.Error
		if msg == "" {
			msg = strings.TrimSpace(string(raw))
		}
		if code == http.StatusNotFound {
			msg = "this gateway does not gossip (no gossip setting in its topology)"
		}
		return &exitError{1, fmt.Errorf("gossip keys %s %s: %s", op, ac.addr, msg)}
	}
	if output == "json" {
		_, err := g.stdout.Write(raw)
		return err
	}
	fmt.Fprintf(g.stdout, "gateway %s gossip keys:\n", resp.Gateway)
	for _, k := range resp.Keys {
		p := ""
		if k.Primary {
			p = " (primary)"
		}
		fmt.Fprintf(g.stdout, "  %s%s\n", k.Fingerprint, p)
	}
	return nil
}
