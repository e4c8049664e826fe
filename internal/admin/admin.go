// Package admin serves a gateway's admin HTTP endpoints: /healthz, /metrics
// (Prometheus, via client_golang's promhttp), /status (JSON), the status
// page /ui (package ui, a read that renders /status in a browser) and the
// mutating actions (POST /v1/failover, /v1/failback).
//
// # Access
//
// Every request must name an allowed Host (loopback names, the listen
// host, the address the client connected to, or Options.Hosts), so that a
// web page cannot reach the API through DNS rebinding. Without a token
// and without client certificates (Options.Token, Options.TLS), reads are
// open and actions are served only to clients on loopback. With either,
// every request must authenticate (a bearer token, or a client
// certificate verified against the fleet CA) except reads of the
// endpoints in Options.Open; actions need the token or an operator
// certificate (Options.Operator): a gateway's own certificate may only
// read.
//
// Actions accept only POST with a JSON object body (Content-Type
// application/json, at most MaxBody bytes) and refuse cross-origin
// browser requests (http.CrossOriginProtection). Every refusal is counted
// in meridian_admin_refused_total{reason} and logged.
package admin

import (
	"bytes"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meridian-gw/meridian/internal/admin/ui"
	"github.com/meridian-gw/meridian/internal/redact"
)

// MaxBody is the largest action body accepted.
const MaxBody = 64 << 10

// Reads are the read endpoints, by the names Options.Open uses.
var Reads = []string{"healthz", "metrics", "status", "members", "ui"}

// Options configure a Server.
type Options struct {
	// Addr is the listen address (host:port; port 0 picks one).
	Addr string
	// Gatherer serves /metrics. Nil means no /metrics.
	Gatherer prometheus.Gatherer
	// Status returns the JSON body of /status. Nil means no /status and
	// no status page (/ui, the read "ui", which renders /status).
	Status func() any
	// Members returns the JSON body of /v1/members (the read "members").
	// Nil means no /v1/members.
	Members func() any
	// Healthy reports problems for /healthz; nil or an empty result is healthy.
	Healthy func() []string
	// Actions are the mutating endpoints, by path ("/v1/failover"). Each
	// is served only for an allowed POST (see the package doc); the
	// handler reads the JSON object body, already checked and at most
	// MaxBody bytes.
	Actions map[string]http.Handler

	// Token, if not "", is the bearer token that authenticates a request
	// (Authorization: Bearer TOKEN).
	Token string
	// TLS, if not nil, serves HTTPS. When it asks for client certificates
	// (ClientAuth at least VerifyClientCertIfGiven, with ClientCAs), a
	// verified certificate authenticates a request.
	TLS *tls.Config
	// Operator says whether a verified client certificate may run
	// actions (nil: none may; it may still read).
	Operator func(*x509.Certificate) bool
	// Open lists the reads (Reads) served without authentication when
	// Token or client certificates are configured. nil means healthz and
	// metrics. "ui" needs "status" too: the page reads /status.
	Open []string
	// Hosts are Host header names accepted besides loopback names, the
	// listen host and the address the client connected to.
	Hosts []string

	// Redact, if not nil, is applied to every response body.
	Redact *redact.Set
	// Registerer takes meridian_admin_refused_total (nil: not exported).
	Registerer prometheus.Registerer
	// Logger; nil discards.
	Logger *slog.Logger
}

// Server is a running admin server.
type Server struct {
	ln   net.Listener
	srv  *http.Server
	wg   sync.WaitGroup
	once sync.Once
	err  error
}

// guard decides who may do what (see the package doc).
type guard struct {
	opts    Options
	auth    bool // a token or client certificates are configured
	open    map[string]bool
	hosts   map[string]bool
	cop     *http.CrossOriginProtection
	refused *prometheus.CounterVec
	logged  sync.Map // reason → *atomic.Int64, to rate-limit logs
	log     *slog.Logger
}

// Refusal reasons, the values of the reason label.
const (
	reasonHost        = "host"           // Host header not allowed (DNS rebinding)
	reasonUnauth      = "unauthorized"   // no or wrong token, no verified certificate
	reasonCertificate = "certificate"    // a verified certificate that may not act
	reasonNotLoopback = "not_loopback"   // an action from off-host without authentication configured
	reasonMethod      = "method"         // an action not sent as POST
	reasonOrigin      = "origin"         // a cross-origin browser request
	reasonContentType = "content_type"   // an action body that is not application/json
	reasonBodyTooBig  = "body_too_large" // an action body over MaxBody
	reasonBody        = "body"           // an action body that is not a JSON object
)

// Start listens and serves in the background until Close.
func Start(opts Options) (*Server, error) {
	h, err := newHandler(&opts)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, err
	}
	if opts.TLS != nil {
		ln = tls.NewListener(ln, opts.TLS)
	}
	s := &Server{ln: ln, srv: &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(opts.Logger.Handler(), slog.LevelWarn),
	}}
	s.wg.Go(func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			opts.Logger.Error("admin server", "err", err)
		}
	})
	return s, nil
}

// newHandler builds the server's handler: every endpoint behind its guard.
// It fills in opts.Logger.
func newHandler(opts *Options) (http.Handler, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	open := opts.Open
	if open == nil {
		open = []string{"healthz", "metrics"}
	}
	for _, o := range open {
		if !slices.Contains(Reads, o) {
			return nil, fmt.Errorf("admin: open endpoint %q: want one of %s", o, strings.Join(Reads, ", "))
		}
	}
	if slices.Contains(open, "ui") && !slices.Contains(open, "status") {
		return nil, errors.New("admin: open endpoint \"ui\" without \"status\": the status page reads /status")
	}
	g := &guard{
		opts:  *opts,
		auth:  opts.Token != "" || opts.TLS != nil && opts.TLS.ClientAuth >= tls.VerifyClientCertIfGiven,
		open:  make(map[string]bool),
		hosts: map[string]bool{"localhost": true},
		cop:   http.NewCrossOriginProtection(),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_admin_refused_total",
			Help: "Admin API requests refused, by reason (host, unauthorized, certificate, not_loopback, method, origin, content_type, body_too_large, body).",
		}, []string{"reason"}),
		log: opts.Logger.With("component", "admin"),
	}
	for _, o := range open {
		g.open[o] = true
	}
	for _, h := range opts.Hosts {
		g.hosts[strings.ToLower(h)] = true
	}
	if h, _, err := net.SplitHostPort(opts.Addr); err == nil && h != "" {
		if ip, err := netip.ParseAddr(h); err != nil || !ip.IsUnspecified() {
			g.hosts[strings.ToLower(h)] = true
		}
	}
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(g.refused); err != nil {
			return nil, fmt.Errorf("admin: register metrics: %w", err)
		}
	}
	g.cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.refuse(w, r, http.StatusForbidden, reasonOrigin, "cross-origin request refused")
	}))

	mux := http.NewServeMux()
	mux.Handle("GET /healthz", g.read("healthz", func(w http.ResponseWriter, r *http.Request) {
		var problems []string
		if opts.Healthy != nil {
			problems = opts.Healthy()
		}
		w.Header().Set("Content-Type", "application/json")
		if len(problems) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"ok": len(problems) == 0, "problems": problems})
	}))
	if opts.Gatherer != nil {
		// Uncompressed, so that redaction sees the text.
		mux.Handle("GET /metrics", g.read("metrics", promhttp.HandlerFor(opts.Gatherer, promhttp.HandlerOpts{DisableCompression: true}).ServeHTTP))
	}
	if opts.Status != nil {
		mux.Handle("GET /status", g.read("status", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			_ = enc.Encode(opts.Status())
		}))
	}
	if opts.Status != nil {
		page := ui.Handler()
		mux.Handle("GET "+ui.Prefix, g.read("ui", page.ServeHTTP))
		mux.Handle("GET "+ui.Prefix+"/", g.read("ui", page.ServeHTTP))
	}
	if opts.Members != nil {
		mux.Handle("GET /v1/members", g.read("members", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			_ = enc.Encode(opts.Members())
		}))
	}
	for path, h := range opts.Actions {
		mux.Handle(path, g.action(h)) // every method: a GET is refused and counted, not 404
	}
	return opts.Redact.Handler(g.checkHost(mux)), nil
}

// refuse answers a refused request, counts and logs it (the first ten of
// each reason, then every thousandth).
func (g *guard) refuse(w http.ResponseWriter, r *http.Request, code int, reason, msg string) {
	g.refused.WithLabelValues(reason).Inc()
	c, _ := g.logged.LoadOrStore(reason, new(atomic.Int64))
	if n := c.(*atomic.Int64).Add(1); n <= 10 || n%1000 == 0 {
		g.log.Warn("admin request refused", "reason", reason, "method", r.Method, "path", r.URL.Path,
			"remote", r.RemoteAddr, "host", r.Host, "origin", r.Header.Get("Origin"), "count", n)
	}
	if reason == reasonUnauth {
		w.Header().Set("WWW-Authenticate", `Bearer realm="meridian"`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg, "reason": reason})
}

// checkHost refuses a Host header that is not allowed.
func (g *guard) checkHost(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !g.hostAllowed(r) {
			g.refuse(w, r, http.StatusForbidden, reasonHost, fmt.Sprintf("host %q not allowed; add it to admin.hosts", r.Host))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (g *guard) hostAllowed(r *http.Request) bool {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
	if host == "" || g.hosts[host] {
		return host != ""
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	if ip.IsLoopback() {
		return true
	}
	// An IP literal the client actually connected to: no name was
	// resolved, so no rebinding is possible.
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if ap, err := netip.ParseAddrPort(la.String()); err == nil && ap.Addr().Unmap() == ip.Unmap() {
			return true
		}
	}
	return false
}

// who is what authenticated a request.
type who struct {
	token bool
	cert  *x509.Certificate // a verified client certificate
}

func (w who) ok() bool { return w.token || w.cert != nil }

func (g *guard) authenticate(r *http.Request) who {
	var out who
	if g.opts.Token != "" {
		if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok &&
			subtle.ConstantTimeCompare([]byte(strings.TrimSpace(tok)), []byte(g.opts.Token)) == 1 {
			out.token = true
		}
	}
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		out.cert = r.TLS.VerifiedChains[0][0]
	}
	return out
}

// read serves a read endpoint to whoever may read it.
func (g *guard) read(name string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.auth && !g.open[name] && !g.authenticate(r).ok() {
			g.refuse(w, r, http.StatusUnauthorized, reasonUnauth, "authentication required: send the admin token or a client certificate")
			return
		}
		h(w, r)
	})
}

// action serves a mutating endpoint to an allowed POST only.
func (g *guard) action(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			g.refuse(w, r, http.StatusMethodNotAllowed, reasonMethod, r.Method+" not allowed; actions are POST with a JSON body")
			return
		}
		if err := g.cop.Check(r); err != nil {
			g.refuse(w, r, http.StatusForbidden, reasonOrigin, "cross-origin request refused: "+err.Error())
			return
		}
		if g.auth {
			id := g.authenticate(r)
			switch {
			case !id.ok():
				g.refuse(w, r, http.StatusUnauthorized, reasonUnauth, "authentication required: send the admin token or an operator certificate")
				return
			case !id.token && (g.opts.Operator == nil || !g.opts.Operator(id.cert)):
				g.refuse(w, r, http.StatusForbidden, reasonCertificate, fmt.Sprintf("certificate %q may not run actions; use an operator certificate (meridian certs --operator NAME)", id.cert.Subject.CommonName))
				return
			}
		} else if !fromLoopback(r) {
			g.refuse(w, r, http.StatusForbidden, reasonNotLoopback, "actions are served only on loopback unless admin.token or admin.mtls is set")
			return
		}
		if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
			g.refuse(w, r, http.StatusUnsupportedMediaType, reasonContentType, fmt.Sprintf("Content-Type %q; want application/json", r.Header.Get("Content-Type")))
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			g.refuse(w, r, http.StatusRequestEntityTooLarge, reasonBodyTooBig, fmt.Sprintf("body over %d bytes", MaxBody))
			return
		case err != nil:
			g.refuse(w, r, http.StatusBadRequest, reasonBody, "read body: "+err.Error())
			return
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(body, &obj); err != nil || obj == nil {
			g.refuse(w, r, http.StatusBadRequest, reasonBody, "body must be a JSON object")
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		h.ServeHTTP(w, r)
	})
}

func fromLoopback(r *http.Request) bool {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	return err == nil && ap.Addr().Unmap().IsLoopback()
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops the server, giving requests in progress up to 5 s, and waits.
func (s *Server) Close() error {
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.err = s.srv.Shutdown(ctx)
		s.wg.Wait()
	})
	return s.err
}
