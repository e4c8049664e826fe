package admin

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-gw/meridian/internal/pki"
)

const testToken = "0123456789abcdef-test-token"

// fixture is a handler with one action that counts how often it ran.
type fixture struct {
	h    http.Handler
	ran  atomic.Int64
	reg  *prometheus.Registry
	body atomic.Value // last body the action saw
}

func newFixture(t *testing.T, opts Options) *fixture {
	t.Helper()
	f := &fixture{reg: prometheus.NewRegistry()}
	opts.Addr = "127.0.0.1:9180"
	opts.Registerer = f.reg
	opts.Gatherer = f.reg
	opts.Status = func() any { return map[string]string{"gateway": "hq-a"} }
	opts.Actions = map[string]http.Handler{"/v1/failover": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		f.body.Store(string(b))
		f.ran.Add(1)
		io.WriteString(w, `{"ok":true}`)
	})}
	h, err := newHandler(&opts)
	if err != nil {
		t.Fatal(err)
	}
	f.h = h
	return f
}

// req describes one request; zero fields take the defaults of a well-formed
// local action.
type req struct {
	method, path, host, remote, contentType, body, token string
	header                                               map[string]string
}

func (f *fixture) do(r req) *httptest.ResponseRecorder {
	if r.method == "" {
		r.method = http.MethodPost
	}
	if r.path == "" {
		r.path = "/v1/failover"
	}
	if r.body == "" && r.method == http.MethodPost {
		r.body = `{"route":"orders"}`
	}
	hr := httptest.NewRequest(r.method, r.path, strings.NewReader(r.body))
	hr.Host = "127.0.0.1:9180"
	if r.host != "" {
		hr.Host = r.host
	}
	hr.RemoteAddr = "127.0.0.1:50000"
	if r.remote != "" {
		hr.RemoteAddr = r.remote
	}
	if r.method == http.MethodPost {
		hr.Header.Set("Content-Type", "application/json")
	}
	if r.contentType != "" {
		hr.Header.Set("Content-Type", r.contentType)
	}
	if r.token != "" {
		hr.Header.Set("Authorization", "Bearer "+r.token)
	}
	for k, v := range r.header {
		hr.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, hr)
	return rec
}

func (f *fixture) refused(reason string) float64 {
	c, err := f.reg.Gather()
	if err != nil {
		panic(err)
	}
	for _, mf := range c {
		if mf.GetName() != "meridian_admin_refused_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestActionsRefused sends each kind of request an action must refuse and
// checks the status, that the action did not run, and the refusal counter.
func TestActionsRefused(t *testing.T) {
	tests := []struct {
		name   string
		opts   Options
		req    req
		code   int
		reason string
	}{
		{"browser cross-origin POST", Options{}, req{header: map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}}, 403, reasonOrigin},
		{"cross-origin POST, Origin only", Options{}, req{header: map[string]string{"Origin": "https://evil.example"}}, 403, reasonOrigin},
		{"DNS rebinding Host", Options{}, req{host: "evil.example:9180", header: map[string]string{"Origin": "http://evil.example:9180"}}, 403, reasonHost},
		{"GET on an action", Options{}, req{method: http.MethodGet}, 405, reasonMethod},
		{"form POST", Options{}, req{contentType: "application/x-www-form-urlencoded", body: "route=orders"}, 415, reasonContentType},
		{"text/plain POST", Options{}, req{contentType: "text/plain"}, 415, reasonContentType},
		{"body over 64 KiB", Options{}, req{body: `{"route":"` + strings.Repeat("x", MaxBody) + `"}`}, 413, reasonBodyTooBig},
		{"body not an object", Options{}, req{body: `["orders"]`}, 400, reasonBody},
		{"off-host without auth configured", Options{}, req{remote: "198.18.0.7:40000"}, 403, reasonNotLoopback},
		{"missing token", Options{Token: testToken}, req{}, 401, reasonUnauth},
		{"wrong token", Options{Token: testToken}, req{token: "0123456789abcdef-wrong"}, 401, reasonUnauth},
		{"token prefix", Options{Token: testToken}, req{token: testToken[:16]}, 401, reasonUnauth},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.opts)
			rec := f.do(tt.req)
			if rec.Code != tt.code {
				t.Errorf("HTTP %d %s, want %d", rec.Code, rec.Body, tt.code)
			}
			if n := f.ran.Load(); n != 0 {
				t.Errorf("the action ran %d times, want never", n)
			}
			if got := f.refused(tt.reason); got != 1 {
				t.Errorf("meridian_admin_refused_total{reason=%q} = %v, want 1", tt.reason, got)
			}
			if !strings.Contains(rec.Body.String(), tt.reason) {
				t.Errorf("reply %s does not name the reason %q", rec.Body, tt.reason)
			}
		})
	}
}

func TestActionsAllowed(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		req  req
	}{
		{"local, no auth configured", Options{}, req{}},
		{"same-origin browser POST", Options{}, req{header: map[string]string{"Origin": "http://127.0.0.1:9180", "Sec-Fetch-Site": "same-origin"}}},
		{"token from off-host", Options{Token: testToken}, req{token: testToken, remote: "198.18.0.7:40000", host: "gw.example", contentType: "application/json; charset=utf-8"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Hosts = []string{"gw.example"}
			f := newFixture(t, tt.opts)
			rec := f.do(tt.req)
			if rec.Code != 200 || f.ran.Load() != 1 {
				t.Fatalf("HTTP %d %s, ran %d; want 200 and the action run once", rec.Code, rec.Body, f.ran.Load())
			}
			if got := f.body.Load(); got != `{"route":"orders"}` {
				t.Errorf("the action read body %q, want the request's", got)
			}
		})
	}
}

func TestReads(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		path string
		req  req
		code int
	}{
		{"no auth configured: status open", Options{}, "/status", req{remote: "198.18.0.7:1"}, 200},
		{"token: healthz open by default", Options{Token: testToken}, "/healthz", req{}, 200},
		{"token: metrics open by default", Options{Token: testToken}, "/metrics", req{}, 200},
		{"token: status needs it", Options{Token: testToken}, "/status", req{}, 401},
		{"token: status with it", Options{Token: testToken}, "/status", req{token: testToken}, 200},
		{"token: open lists status", Options{Token: testToken, Open: []string{"status"}}, "/status", req{}, 200},
		{"token: empty open closes metrics", Options{Token: testToken, Open: []string{}}, "/metrics", req{}, 401},
		{"rebinding Host on a read", Options{}, "/status", req{host: "evil.example"}, 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.opts)
			tt.req.method, tt.req.path = http.MethodGet, tt.path
			if rec := f.do(tt.req); rec.Code != tt.code {
				t.Errorf("GET %s: HTTP %d %s, want %d", tt.path, rec.Code, rec.Body, tt.code)
			}
		})
	}
}

// TestMTLS runs a real HTTPS server: an operator certificate may fail
// over, a gateway's certificate may read but not act, no certificate may
// do neither.
func TestMTLS(t *testing.T) {
	ca, err := pki.NewCA("test CA", 0)
	if err != nil {
		t.Fatal(err)
	}
	serverCert, err := ca.Issue("hq-a", []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	site, err := ca.Issue("vessel-7", nil)
	if err != nil {
		t.Fatal(err)
	}
	op, err := ca.IssueOperator("alice")
	if err != nil {
		t.Fatal(err)
	}
	srvTLS := ca.ServerConfig(serverCert)
	srvTLS.ClientAuth = tls.VerifyClientCertIfGiven
	var ran atomic.Int64
	s, err := Start(Options{Addr: "127.0.0.1:0", TLS: srvTLS,
		Operator: func(c *x509.Certificate) bool { _, ok := pki.OperatorName(c); return ok },
		Status:   func() any { return "ok" },
		Actions: map[string]http.Handler{"/v1/failover": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ran.Add(1)
		})}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	base := "https://" + s.Addr().String()
	client := func(c *pki.Cert) *http.Client {
		cfg := &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS13}
		if c != nil {
			cfg.Certificates = []tls.Certificate{c.TLSCertificate()}
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
	}
	call := func(cl *http.Client, method, path string) int {
		t.Helper()
		r, _ := http.NewRequest(method, base+path, strings.NewReader(`{"route":"orders"}`))
		r.Header.Set("Content-Type", "application/json")
		resp, err := cl.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	tests := []struct {
		name         string
		cert         *pki.Cert
		method, path string
		code         int
	}{
		{"operator fails over", op, "POST", "/v1/failover", 200},
		{"site certificate may not act", site, "POST", "/v1/failover", 403},
		{"site certificate reads status", site, "GET", "/status", 200},
		{"no certificate may not act", nil, "POST", "/v1/failover", 401},
		{"no certificate may not read status", nil, "GET", "/status", 401},
		{"no certificate reads healthz", nil, "GET", "/healthz", 200},
	}
	for _, tt := range tests {
		before := ran.Load()
		if code := call(client(tt.cert), tt.method, tt.path); code != tt.code {
			t.Errorf("%s: HTTP %d, want %d", tt.name, code, tt.code)
		}
		if want := int64(0); tt.method == "POST" && tt.code == 200 {
			want = 1
			if got := ran.Load() - before; got != want {
				t.Errorf("%s: action ran %d times, want %d", tt.name, got, want)
			}
		} else if got := ran.Load() - before; got != want {
			t.Errorf("%s: action ran %d times, want %d", tt.name, got, want)
		}
	}
}
