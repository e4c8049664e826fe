package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-gw/meridian/config"
	"github.com/meridian-gw/meridian/internal/redact"
	"github.com/meridian-gw/meridian/mirror"
	"github.com/meridian-gw/meridian/routing"
	"github.com/meridian-gw/meridian/topology"
	"github.com/meridian-gw/meridian/transport"
)

// Outcomes of a reload (ReloadResult.Outcome).
const (
	ReloadApplied   = "applied"   // the new legs run
	ReloadUnchanged = "unchanged" // the file changes no leg of this gateway
	ReloadRefused   = "refused"   // a setting that cannot change live changed; the old configuration runs
	ReloadInvalid   = "invalid"   // the file does not load or build; the old configuration runs
)

// ReloadResult is what a reload did, for the log, POST /v1/reload,
// /status and `meridian reload`.
type ReloadResult struct {
	Outcome string    `json:"outcome"`
	At      time.Time `json:"at"`
	// Added, Removed and Changed are this gateway's legs, each
	// "out LEG" (sent) or "in LEG" (received), and "peer NAME" for a
	// peer dialled only to receive.
	Added   []string `json:"added,omitempty"`
	Removed []string `json:"removed,omitempty"`
	Changed []string `json:"changed,omitempty"`
	// EngineRestarted: the change could not apply to the running engine
	// (a received leg that changed or went while a session carried it, a
	// peer that dials this gateway), so applying drained the engine and
	// started one on the new table; every leg resumes from the progress
	// at its destination. False for an applied reload: only the legs
	// received that changed started or stopped, and only the senders of
	// RestartedPeers restarted.
	EngineRestarted bool `json:"engine_restarted,omitempty"`
	// RestartedPeers: the peers whose senders applying stopped or
	// started (their legs changed); every other session kept running.
	RestartedPeers []string `json:"restarted_peers,omitempty"`
	// Problems say why a reload was refused or invalid, each
	// "file:line:col: path: reason" where the setting is known.
	Problems []string `json:"problems,omitempty"`
}

// OK reports whether the reload left the gateway on the file's
// configuration (applied or unchanged).
func (r *ReloadResult) OK() bool { return r.Outcome == ReloadApplied || r.Outcome == ReloadUnchanged }

// statusJSON is /status: the engine's status and the last reload.
type statusJSON struct {
	mirror.Status
	Reload *ReloadResult `json:"reload,omitempty"`
}

// reloader is a gateway's reload state: one reload at a time, the swap of
// engines with Run, the outcome and its metrics.
type reloader struct {
	mu sync.Mutex // held for a whole reload; a leaf otherwise taken only by Reload

	swap chan *swapRequest // to runEngines

	runMu   sync.Mutex // guards running, exited; a leaf
	running bool
	exited  chan struct{} // closed when runEngines returns

	lastMu  sync.Mutex // a leaf
	lastRes *ReloadResult

	ok, okAt, attemptAt prometheus.Gauge
	outcomes            *prometheus.CounterVec
}

type swapRequest struct {
	next *live
	done chan struct{} // closed once next runs
}

func (r *reloader) init(reg prometheus.Registerer) {
	r.swap = make(chan *swapRequest)
	r.exited = make(chan struct{})
	r.ok = prometheus.NewGauge(prometheus.GaugeOpts{Name: "meridian_config_last_reload_successful",
		Help: "1 if the last configuration reload applied (or changed nothing), 0 if it was refused or the file was invalid."})
	r.okAt = prometheus.NewGauge(prometheus.GaugeOpts{Name: "meridian_config_last_reload_success_timestamp_seconds",
		Help: "Time of the last successful configuration reload (the start of the gateway before any), Unix seconds."})
	r.attemptAt = prometheus.NewGauge(prometheus.GaugeOpts{Name: "meridian_config_last_reload_attempt_timestamp_seconds",
		Help: "Time of the last configuration reload attempt, Unix seconds; 0 before any."})
	r.outcomes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_config_reloads_total",
		Help: "Configuration reloads by outcome (applied, unchanged, refused, invalid)."}, []string{"outcome"})
	for _, o := range []string{ReloadApplied, ReloadUnchanged, ReloadRefused, ReloadInvalid} {
		r.outcomes.WithLabelValues(o)
	}
	r.ok.Set(1)
	r.okAt.Set(float64(time.Now().UnixNano()) / 1e9)
	reg.MustRegister(r.ok, r.okAt, r.attemptAt, r.outcomes)
}

// last is the last reload's result, nil before any.
func (r *reloader) last() *ReloadResult {
	r.lastMu.Lock()
	defer r.lastMu.Unlock()
	return r.lastRes
}

func (r *reloader) record(res *ReloadResult) {
	r.lastMu.Lock()
	r.lastRes = res
	r.lastMu.Unlock()
	ts := float64(res.At.UnixNano()) / 1e9
	r.attemptAt.Set(ts)
	r.outcomes.WithLabelValues(res.Outcome).Inc()
	if res.OK() {
		r.ok.Set(1)
		r.okAt.Set(ts)
	} else {
		r.ok.Set(0)
	}
}

// sharedListen is every engine's mirror.Options.Listen: the gateway's one
// link listener, bound by the first engine that asks and closed by Run,
// so that a reload's engine takes over the bound address. Its sessions
// are decided by the engine running at the time (Accept).
func (g *Gateway) sharedListen(transport.Accept) (transport.Listener, error) {
	g.lnMu.Lock()
	defer g.lnMu.Unlock()
	if g.ln == nil {
		ln, err := g.listen(g.serverTLS, func(h *transport.Hello) (*transport.Welcome, error) { return g.now().eng.Accept(h) })
		if err != nil {
			return nil, err
		}
		g.ln = ln
	}
	return keptListener{g.ln}, nil
}

// keptListener is the shared link listener as one engine sees it: the
// engine's Close leaves it open for the next.
type keptListener struct{ transport.Listener }

func (keptListener) Close() error { return nil }

// runEngines runs the current engine until ctx ends, replacing it when a
// reload asks (drain the old, then run the new). It returns the last
// engine's error.
func (g *Gateway) runEngines(ctx context.Context) error {
	r := &g.reload
	r.runMu.Lock()
	r.running = true
	r.runMu.Unlock()
	defer func() {
		r.runMu.Lock()
		r.running = false
		close(r.exited)
		r.runMu.Unlock()
	}()
	for {
		cur := g.now()
		ectx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- cur.eng.Run(ectx) }() // waited for below on every path
		select {
		case err := <-done:
			cancel()
			return err
		case req := <-r.swap:
			start := time.Now()
			cancel()
			if err := <-done; err != nil {
				g.log.Error("reload: the old engine ended with an error", "err", err)
			}
			g.live.Store(req.next)
			close(req.done)
			g.log.Info("reload: engine replaced", "drained_in", time.Since(start).Round(time.Millisecond))
		}
	}
}

// swapEngine makes next the running engine: through runEngines when the
// gateway runs, at once when it has not started.
func (g *Gateway) swapEngine(ctx context.Context, next *live) error {
	r := &g.reload
	r.runMu.Lock()
	if !r.running {
		select {
		case <-r.exited:
			r.runMu.Unlock()
			return errors.New("the gateway has stopped")
		default:
		}
		g.live.Store(next)
		r.runMu.Unlock()
		return nil
	}
	r.runMu.Unlock()
	req := &swapRequest{next: next, done: make(chan struct{})}
	select {
	case r.swap <- req:
	case <-r.exited:
		return errors.New("the gateway has stopped")
	case <-ctx.Done():
		return ctx.Err()
	}
	<-req.done // runEngines closes it once the old engine has drained
	return nil
}

// Reload re-reads the topology (Options.Reload) and applies what changed
// for this gateway's legs, or refuses, leaving the running configuration
// as it is (docs/reload.md). Reloads run one at a time. Applying drains
// the engine and starts one on the new table; every leg resumes from the
// progress committed at its destination, so records stay exactly once.
func (g *Gateway) Reload(ctx context.Context) *ReloadResult {
	g.reload.mu.Lock()
	defer g.reload.mu.Unlock()
	res := g.reloadLocked(ctx)
	res.At = time.Now()
	g.reload.record(res)
	switch res.Outcome {
	case ReloadApplied:
		g.log.Info("configuration reloaded", "added", res.Added, "removed", res.Removed, "changed", res.Changed,
			"restarted_peers", res.RestartedPeers, "engine_restarted", res.EngineRestarted)
	case ReloadUnchanged:
		g.log.Info("configuration reloaded: nothing changed for this gateway")
	default:
		g.log.Error("configuration reload "+res.Outcome+": the running configuration stays", "problems", res.Problems)
	}
	return res
}

func (g *Gateway) reloadLocked(ctx context.Context) *ReloadResult {
	fail := func(outcome string, errs ...error) *ReloadResult {
		res := &ReloadResult{Outcome: outcome}
		for _, e := range errs {
			res.Problems = append(res.Problems, e.Error())
		}
		return res
	}
	if g.opts.Reload == nil {
		return fail(ReloadRefused, errors.New("this gateway was not started from a topology file (Options.Reload is nil)"))
	}
	topo, place, err := g.opts.Reload()
	if err != nil {
		return fail(ReloadInvalid, flatten(err, place)...)
	}
	o := g.opts
	o.Topology = topo
	cand, _, err := assemble(o)
	if err != nil {
		return fail(ReloadInvalid, flatten(err, place)...)
	}
	cur := g.now()
	if problems := g.nonLive(cur.table, cand.table, topo); len(problems) > 0 {
		return fail(ReloadRefused, flatten(errors.Join(problems...), place)...)
	}
	res := &ReloadResult{Outcome: ReloadUnchanged}
	res.Added, res.Removed, res.Changed = diffLegs(cur.table, cand.table)
	if len(res.Added)+len(res.Removed)+len(res.Changed) == 0 {
		return res
	}
	err = g.applyLive(cur.eng, cand, res)
	if err == nil {
		g.live.Store(&live{table: cand.table, eng: cur.eng})
		res.Outcome = ReloadApplied
		return res
	}
	g.log.Info("reload: restarting the engine", "why", err)
	res.RestartedPeers = nil
	eng, err := g.newEngine(cand.table, cand.peers)
	if err != nil {
		return fail(ReloadInvalid, err)
	}
	if err := g.swapEngine(ctx, &live{table: cand.table, eng: eng}); err != nil {
		return fail(ReloadRefused, fmt.Errorf("apply: %w", err))
	}
	res.Outcome, res.EngineRestarted = ReloadApplied, true
	return res
}

// flatten lists the problems err joins, placing each *SettingError at its
// setting with place (nil: as it is).
func flatten(err error, place func(path string, err error) error) []error {
	var se *SettingError
	if errors.As(err, &se) && err == error(se) {
		if place != nil {
			return []error{place(se.Path, se.Err)}
		}
		return []error{se}
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e, place)...)
		}
		return out
	}
	if u := errors.Unwrap(err); u != nil && errors.As(err, &se) {
		return flatten(u, place) // "gateway X: " around a join of setting errors
	}
	return []error{err}
}

// nonLive lists the changes from cur to next that cannot apply while the
// gateway runs, each at its setting in the new file: the gateway's own
// name, region, addresses, TLS, admin and gossip settings, the fleet's tls
// policy and gossip keys, the transport and broker of a link in use, the
// bootstrap, TLS and SASL of a cluster in use, and a change that would
// need a link listener the gateway did not bind at start.
func (g *Gateway) nonLive(cur, next *routing.Table, topo *topology.Topology) []error {
	var out []error
	refuse := func(path, format string, args ...any) {
		out = append(out, &SettingError{path, fmt.Errorf("cannot change while the gateway runs (restart it): "+format, args...)})
	}
	was, now := g.table.Gateway, next.Gateway
	if was.Region.Name != now.Region.Name {
		refuse(now.Path, "the gateway's region, %q before, %q now", was.Region.Name, now.Region.Name)
	}
	for _, s := range []struct {
		field    string
		old, new any
	}{
		{"listen", was.Listen, now.Listen},
		{"advertise", was.Advertise, now.Advertise},
		{"admin", []any{was.Admin, was.AdminAuth}, []any{now.Admin, now.AdminAuth}},
		{"tls", was.TLS, now.TLS},
		{"gossip", was.Gossip, now.Gossip},
	} {
		if s.field == "advertise" && was.Advertise == was.Listen && now.Advertise == now.Listen {
			continue // advertise defaults to listen: reported there
		}
		if !reflect.DeepEqual(s.old, s.new) {
			what := s.field + " of this gateway"
			if v, ok := s.old.(string); ok {
				what += fmt.Sprintf(" (%q before)", v) // addresses; never the admin token
			}
			refuse(now.Path+"."+s.field, "%s", what)
		}
	}
	if !reflect.DeepEqual(g.opts.Topology.LinkTLS, topo.LinkTLS) {
		refuse("tls", "the fleet's link tls policy")
	}
	if !reflect.DeepEqual(g.opts.Topology.GossipKeys, topo.GossipKeys) {
		refuse("gossip.keys", "the gossip keys (rotate them with POST /v1/gossip/keys)")
	}
	links := map[string]*topology.Link{}
	clusters := map[string]*topology.Cluster{}
	for _, l := range legsOf(cur) {
		links[l.Link.Name] = l.Link
		clusters[l.From.Ref()], clusters[l.To.Ref()] = l.From, l.To
	}
	for _, l := range legsOf(next) {
		old := links[l.Link.Name]
		if old == nil || l.Link.Path == "" {
			continue
		}
		if old.Transport != l.Link.Transport {
			refuse(l.Link.Path+".transport", "the transport of link %s, in use (%s before, %s now)", l.Link.Name, old.Transport, l.Link.Transport)
		}
		if !reflect.DeepEqual(old.AMQP, l.Link.AMQP) {
			refuse(l.Link.Path+".amqp", "the broker of link %s, in use", l.Link.Name)
		}
		delete(links, l.Link.Name) // one report per link
	}
	refs := make([]string, 0, len(clusters))
	for ref := range clusters {
		refs = append(refs, ref)
	}
	slices.Sort(refs)
	for _, ref := range refs {
		old, c := clusters[ref], topo.Clusters[ref]
		if c == nil {
			continue // no longer in the file: its legs are removed
		}
		for _, s := range []struct {
			field    string
			old, new any
		}{{"bootstrap", old.Bootstrap, c.Bootstrap}, {"tls", old.TLS, c.TLS}, {"sasl", old.SASL, c.SASL}, {"amqp", old.AMQP, c.AMQP}} {
			if !reflect.DeepEqual(s.old, s.new) {
				refuse(c.Path+"."+s.field, "%s of cluster %s, in use by this gateway's legs", s.field, ref)
			}
		}
	}
	if receivesQUIC(next) && !receivesQUIC(g.table) {
		refuse(now.Path+".listen", "this gateway would accept link sessions, and its link listener is bound only at start")
	}
	startAMQP := map[string]bool{}
	for _, name := range amqpInLinks(g.table) {
		startAMQP[name] = true
	}
	for _, name := range amqpInLinks(next) {
		if !startAMQP[name] {
			refuse(now.Path, "this gateway would receive over amqp link %s, whose broker listener is opened only at start", name)
		}
	}
	return out
}

// legsOf is every leg of t, sent and received.
func legsOf(t *routing.Table) []*routing.Leg {
	out := slices.Clone(t.In)
	for _, p := range t.Out {
		out = append(out, p.Legs...)
	}
	return out
}

// amqpInLinks names the amqp links t receives legs over.
func amqpInLinks(t *routing.Table) []string {
	var out []string
	for _, l := range t.In {
		if l.Link.Transport == "amqp" && !slices.Contains(out, l.Link.Name) {
			out = append(out, l.Link.Name)
		}
	}
	return out
}

// diffLegs compares two tables of one gateway by leg (direction and ID)
// and by what each leg does (legPrint).
func diffLegs(cur, next *routing.Table) (added, removed, changed []string) {
	a, b := tablePrints(cur), tablePrints(next)
	for k, p := range b {
		switch q, ok := a[k]; {
		case !ok:
			added = append(added, k)
		case q != p:
			changed = append(changed, k)
		}
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			removed = append(removed, k)
		}
	}
	slices.Sort(added)
	slices.Sort(removed)
	slices.Sort(changed)
	return added, removed, changed
}

// carriedWait is how long applyLive waits for a session to let go of a
// leg being removed before the engine restarts instead.
const carriedWait = 3 * time.Second

// applyLive applies the diff in res to the running engine: the inbound
// legs added, removed or changed start or stop alone (ApplyIn), then the
// senders of the peers whose legs changed restart alone (ApplyOut). An
// error (mirror.ErrNotLive) means the caller restarts the engine, which
// replaces whatever applyLive changed.
func (g *Gateway) applyLive(eng *mirror.Engine, cand *Gateway, res *ReloadResult) error {
	if touchesIn(res) {
		// The filter is the sender's: a receiver keeps a leg whose filter
		// alone changed running.
		same := func(a, b *routing.Leg) bool { return legPrintIn(a) == legPrintIn(b) }
		// A leg being removed may still be carried by the session of a
		// sender that was reloaded just before (the documented order) and
		// has closed it: the receiver detaches it within moments.
		deadline := time.Now().Add(carriedWait)
		for {
			_, _, err := eng.ApplyIn(cand.table, same)
			if err == nil {
				break
			}
			if !errors.Is(err, mirror.ErrCarried) || time.Now().After(deadline) {
				return err
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if !touchesOut(res) {
		return nil
	}
	dial := func(ctx context.Context, peer string, h *transport.Hello) (transport.Conn, error) {
		return dialPeer(ctx, cand.table, cand.peers, peer, h)
	}
	peers, err := eng.ApplyOut(cand.table, samePeer, dial)
	if err != nil {
		return err
	}
	res.RestartedPeers = peers
	return nil
}

// touchesOut reports whether a diff changes any leg or peer the gateway
// sends to.
func touchesOut(res *ReloadResult) bool {
	for _, k := range slices.Concat(res.Added, res.Removed, res.Changed) {
		if !strings.HasPrefix(k, "in ") {
			return true
		}
	}
	return false
}

// touchesIn reports whether a diff changes any leg the gateway receives.
func touchesIn(res *ReloadResult) bool {
	for _, k := range slices.Concat(res.Added, res.Removed, res.Changed) {
		if strings.HasPrefix(k, "in ") {
			return true
		}
	}
	return false
}

// samePeer reports whether two peers of the same gateway run the same:
// the same legs doing the same (legPrint), in the same order.
func samePeer(a, b *routing.Peer) bool { return peerPrint(a) == peerPrint(b) }

func peerPrint(p *routing.Peer) string {
	s := legPrint(nil, p)
	for _, l := range p.Legs {
		s += "\n" + legPrint(l, p)
	}
	return s
}

// tablePrints maps each leg of t ("in ID", "out ID") and each peer
// dialled only to receive ("peer NAME") to its print.
func tablePrints(t *routing.Table) map[string]string {
	out := map[string]string{}
	for _, l := range t.In {
		out["in "+l.ID] = legPrint(l, nil)
	}
	for _, p := range t.Out {
		for _, l := range p.Legs {
			out["out "+l.ID] = legPrint(l, p)
		}
		if len(p.Legs) == 0 {
			out["peer "+p.Gateway.Name] = legPrint(nil, p)
		}
	}
	return out
}

// legPrintIn is legPrint of a received leg without its route's filter,
// which only the sending gateway evaluates.
func legPrintIn(l *routing.Leg) string {
	c := *l
	r := *l.Route
	r.Filter = ""
	c.Route = &r
	return legPrint(&c, nil)
}

// legPrint is what a leg (and its peer, for a leg sent) does, as text:
// two legs with the same print run the same.
func legPrint(l *routing.Leg, p *routing.Peer) string {
	type linkPrint struct {
		Name, Transport, Profile, Compression string
		RateLimit, Window                     int64
		Passthrough                           bool
		Dial, PinA, PinB                      string
		AMQP                                  any
	}
	lp := func(k *topology.Link) linkPrint {
		name := func(g *topology.Gateway) string {
			if g == nil {
				return ""
			}
			return g.Name
		}
		dial := ""
		if k.Dial != nil {
			dial = k.Dial.Name
		}
		return linkPrint{k.Name, k.Transport, k.Profile, k.Compression, k.RateLimit, k.Window, k.Passthrough, dial, name(k.PinA), name(k.PinB), k.AMQP}
	}
	v := map[string]any{}
	if l != nil {
		r := *l.Route
		r.From, r.To = nil, nil
		to := make([]string, len(l.Route.To))
		for i, c := range l.Route.To {
			to[i] = c.Ref()
		}
		v["route"], v["route_to"], v["from"], v["to"] = r, to, l.From.Ref(), l.To.Ref()
		v["link"], v["loop_writers"] = lp(l.Link), l.LoopWriters
	}
	if p != nil {
		recv := make([]string, len(p.Receive))
		for i, r := range p.Receive {
			recv[i] = r.ID
		}
		v["peer"] = []any{p.Gateway.Name, p.Gateway.Advertise, p.Dials, recv, lp(p.Link)}
		if len(p.RelayPaths) > 0 {
			// A changed relay path or hold-down restarts the peer's sender.
			var paths []string
			for _, rp := range p.RelayPaths {
				paths = append(paths, rp.Describe())
			}
			v["relay"] = []any{paths, p.Link.HoldDown.String()}
		}
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v) // cannot happen: plain data
	}
	return string(b)
}

// serveReload is POST /v1/reload: a reload, answered with its
// ReloadResult: 200 applied or unchanged, 409 refused, 400 invalid. The
// admin server has checked the caller as for failover; the body is a JSON
// object, empty.
func (g *Gateway) serveReload(w http.ResponseWriter, r *http.Request) {
	var req struct{}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	w.Header().Set("Content-Type", "application/json")
	if err := dec.Decode(&req); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": fmt.Sprintf("reload request: %v (want {})", err)})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Minute)
	defer cancel()
	res := g.Reload(ctx)
	code := http.StatusOK
	switch res.Outcome {
	case ReloadRefused:
		code = http.StatusConflict
	case ReloadInvalid:
		code = http.StatusBadRequest
	}
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(res)
}

// String is a one-line summary of the result.
func (r *ReloadResult) String() string {
	var b strings.Builder
	b.WriteString(r.Outcome)
	for _, s := range []struct {
		what string
		legs []string
	}{{"added", r.Added}, {"removed", r.Removed}, {"changed", r.Changed}} {
		if len(s.legs) > 0 {
			fmt.Fprintf(&b, "; %s %s", s.what, strings.Join(s.legs, ", "))
		}
	}
	for _, p := range r.Problems {
		b.WriteString("; " + p)
	}
	return b.String()
}

// ReloadFrom is an Options.Reload that loads the topology file at path as
// `meridian run` does (config.Load, topology.New), adding its secrets to
// secrets (nil: none) so that they are redacted like the first file's.
func ReloadFrom(path string, secrets *redact.Set) func() (*topology.Topology, func(string, error) error, error) {
	return func() (*topology.Topology, func(string, error) error, error) {
		f, err := config.Load(path)
		if err != nil {
			return nil, nil, err
		}
		if secrets != nil {
			secrets.Add(f.Secrets()...)
		}
		topo, err := topology.New(f)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
		return topo, func(p string, err error) error { return f.ErrorAt(p, "%v", err) }, nil
	}
}
