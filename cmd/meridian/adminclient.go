package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meridian-gw/meridian/internal/pki"
)

// adminTokenEnv holds the admin token for commands that talk to a
// gateway's admin API, unless --token-file names a file.
const adminTokenEnv = "MERIDIAN_ADMIN_TOKEN"

// adminClient is how a command reaches a gateway's admin API: its address
// and the credentials it sends (a bearer token, an operator certificate).
type adminClient struct {
	addr                  string
	tokenFile             string
	certFile, keyFile, ca string
	defaultAddr, purpose  string
}

func (a *adminClient) flags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&a.addr, "admin", a.defaultAddr, "gateway admin address host:port (https://host:port for admin.mtls)"+a.purpose)
	cmd.Flags().StringVar(&a.tokenFile, "token-file", "", "file holding the admin token (default: $"+adminTokenEnv+")")
	cmd.Flags().StringVar(&a.certFile, "cert", "", "operator certificate for admin.mtls (meridian certs --operator NAME)")
	cmd.Flags().StringVar(&a.keyFile, "key", "", "its private key")
	cmd.Flags().StringVar(&a.ca, "ca", "", "fleet CA that signed the gateway's certificate (https)")
}

// token is the admin token to send, "" for none.
func (a *adminClient) token() (string, error) {
	if a.tokenFile == "" {
		return strings.TrimSpace(os.Getenv(adminTokenEnv)), nil
	}
	b, err := os.ReadFile(a.tokenFile)
	if err != nil {
		return "", fmt.Errorf("--token-file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// baseURL and client: https when the address says so or TLS files are given.
func (a *adminClient) client() (string, *http.Client, error) {
	url := a.addr
	tlsWanted := a.ca != "" || a.certFile != "" || a.keyFile != ""
	if !strings.Contains(url, "://") {
		url = "http://" + url
		if tlsWanted {
			url = "https://" + a.addr
		}
	}
	if (a.certFile == "") != (a.keyFile == "") {
		return "", nil, fmt.Errorf("--cert and --key go together")
	}
	if !strings.HasPrefix(url, "https://") {
		if tlsWanted {
			return "", nil, fmt.Errorf("--admin %s is http://; --ca, --cert and --key need https://", a.addr)
		}
		return url, http.DefaultClient, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS13}
	if a.ca != "" {
		pool, err := pki.LoadPool(a.ca)
		if err != nil {
			return "", nil, fmt.Errorf("--ca: %w", err)
		}
		cfg.RootCAs = pool
	}
	if a.certFile != "" {
		c, err := tls.LoadX509KeyPair(a.certFile, a.keyFile)
		if err != nil {
			return "", nil, fmt.Errorf("--cert/--key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	return url, &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}, nil
}

// do sends one request (a JSON body for POST) and returns the status and
// body. what names the call in errors ("status", "failover").
func (a *adminClient) do(ctx context.Context, what, method, path string, body any, timeout time.Duration) (int, []byte, error) {
	base, cl, err := a.client()
	if err != nil {
		return 0, nil, fmt.Errorf("%s: %w", what, err)
	}
	tok, err := a.token()
	if err != nil {
		return 0, nil, fmt.Errorf("%s: %w", what, err)
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, fmt.Errorf("%s: %w", what, err)
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", what, a.addr, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := cl.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%s: gateway admin %s unreachable: %w", what, a.addr, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", what, a.addr, err)
	}
	return resp.StatusCode, raw, nil
}
