package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"sync"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/meridian-gw/meridian/internal/gateway"
	"github.com/meridian-gw/meridian/internal/pki"
)

func newRunCmd(g *globals) *cobra.Command {
	var file, name string
	cmd := &cobra.Command{
		Use:   "run -f FILE --gateway NAME",
		Short: "Run one gateway of a topology until SIGINT/SIGTERM, then drain and exit",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return &exitError{2, err}
			}
			f, topo, err := g.loadFile(file)
			if err != nil {
				return &exitError{1, err}
			}
			for _, w := range f.Warnings() {
				log.Warn("topology warning", "problem", w.Error())
			}
			if _, ok := topo.Gateways[name]; !ok {
				names := make([]string, 0, len(topo.Gateways))
				for n := range topo.Gateways {
					names = append(names, n)
				}
				sort.Strings(names)
				return &exitError{1, fmt.Errorf("%s: no gateway %q (gateways: %v)", file, name, names)}
			}
			gw, err := gateway.New(gateway.Options{Topology: topo, Name: name, Logger: log, Secrets: g.secrets,
				Reload: gateway.ReloadFrom(file, g.secrets)})
			if err != nil {
				return &exitError{1, err}
			}
			// SIGHUP reloads the file (as POST /v1/reload does); the
			// reloader goroutine ends with the gateway.
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			var wg sync.WaitGroup
			wg.Go(func() {
				for {
					select {
					case <-ctx.Done():
						return
					case <-hup:
						log.Info("SIGHUP: reloading the topology file", "file", file)
						gw.Reload(ctx) // logs its outcome
					}
				}
			})
			err = gw.Run(ctx)
			cancel()
			wg.Wait()
			if err != nil {
				return &exitError{1, err}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "topology file (required)")
	cmd.Flags().StringVarP(&name, "gateway", "g", "", "name of the gateway to run (required)")
	_ = cmd.MarkFlagRequired("file")
	_ = cmd.MarkFlagRequired("gateway")
	return cmd
}

func newCertsCmd(g *globals) *cobra.Command {
	var file, dir string
	var names, operators []string
	var loopback bool
	cmd := &cobra.Command{
		Use:   "certs --out DIR (-f FILE | --gateway NAME... | --operator NAME...)",
		Short: "Create a CA and a link certificate for each gateway (reuses DIR/ca.crt and ca.key if present), or operator certificates for the admin API",
		Long: `certs writes DIR/ca.crt and ca.key (the fleet CA, reused when present) and
<gateway>.crt and .key for each gateway named.

--operator NAME issues a client certificate from the fleet CA already in DIR
(Common Name operator:NAME) and writes DIR/operator-NAME.crt and .key: with
admin.mtls set, it may run admin actions (failover); a gateway's certificate
may only read. Use it with status --cert/--key/--ca.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var specs []pki.GatewaySpec
			if file != "" {
				topo, err := g.loadTopology(file)
				if err != nil {
					return &exitError{1, err}
				}
				for _, gw := range topo.Gateways {
					specs = append(specs, pki.GatewaySpec{Name: gw.Name, Hosts: hostsOf(gw.Listen, gw.Advertise), Loopback: loopback})
				}
			}
			for _, n := range names {
				specs = append(specs, pki.GatewaySpec{Name: n, Loopback: loopback})
			}
			if len(specs) == 0 && len(operators) == 0 {
				return &exitError{2, fmt.Errorf("certs: name gateways with -f FILE or --gateway NAME, or operators with --operator NAME")}
			}
			if len(specs) > 0 {
				sort.Slice(specs, func(i, j int) bool { return specs[i].Name < specs[j].Name })
				if err := pki.GenerateBundle(dir, specs); err != nil {
					return &exitError{1, err}
				}
				fmt.Fprintf(g.stdout, "wrote %s and %s\n", filepath.Join(dir, pki.CACertFile), filepath.Join(dir, pki.CAKeyFile))
				for _, s := range specs {
					fmt.Fprintf(g.stdout, "wrote %s.crt and %s.key\n", filepath.Join(dir, s.Name), filepath.Join(dir, s.Name))
				}
			}
			if len(operators) == 0 {
				return nil
			}
			ca, err := pki.LoadCA(filepath.Join(dir, pki.CACertFile), filepath.Join(dir, pki.CAKeyFile))
			if err != nil {
				return &exitError{1, fmt.Errorf("certs --operator: the fleet CA in %s: %w (make it with meridian certs -f FILE --out %s)", dir, err, dir)}
			}
			for _, name := range operators {
				c, err := ca.IssueOperator(name)
				if err != nil {
					return &exitError{1, err}
				}
				if err := c.WriteOperatorFiles(dir); err != nil {
					return &exitError{1, err}
				}
				certFile, keyFile := pki.OperatorFiles(dir, name)
				fmt.Fprintf(g.stdout, "wrote %s and %s (operator:%s)\n", certFile, keyFile, name)
			}
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&operators, "operator", nil, "operator name: issue an admin client certificate from the CA in --out (repeatable)")
	cmd.Flags().StringVarP(&file, "file", "f", "", "topology file: one certificate per gateway, with its listen/advertise hosts")
	cmd.Flags().StringSliceVar(&names, "gateway", nil, "gateway name (repeatable)")
	cmd.Flags().StringVar(&dir, "out", "certs", "output directory")
	cmd.Flags().BoolVar(&loopback, "loopback", true, "also valid for localhost, 127.0.0.1 and ::1")
	return cmd
}

// hostsOf returns the host parts of addresses that name a specific host.
func hostsOf(addrs ...string) []string {
	var out []string
	seen := map[string]bool{}
	for _, a := range addrs {
		h, _, err := net.SplitHostPort(a)
		if err != nil || h == "" || h == "0.0.0.0" || h == "::" || seen[h] {
			continue
		}
		seen[h] = true
		out = append(out, h)
	}
	return out
}
