package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"regexp/syntax"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-gw/meridian/routing/topicset"
	"github.com/meridian-gw/meridian/topology/profile"
)

var compressions = []string{"none", "zstd", "s2"}

var saslMechanisms = []string{"plain", "scram-sha-256", "scram-sha-512"}

var renamePlaceholders = []string{"topic", "source_region", "source_cluster"}

const minDiscover = 100 * time.Millisecond

// maxLinkCost bounds links[].cost, so that the cost of any path fits an int.
const maxLinkCost = 1_000_000

// validator checks a decoded, defaulted File and collects every problem.
type validator struct {
	f    *File
	file string
	pos  map[string]pos  // from the decoder; nil for a File built in code
	bad  map[string]bool // paths the decoder already complained about
	// exprs places problems inside filter expressions (nil: at the
	// setting).
	exprs *exprSources
	errs  Errors

	// Filled by links, used by routes and gateways.
	linked     map[[2]string]bool // sorted region pair → joined by a link
	linkOf     map[gwKey]string   // gateway → name of the first quic link it carries
	usedBy     map[string]string  // region → first link or route using it
	regionIdx  map[string]int
	gatewayIdx map[string]gwKey // gateway name → first gateway with that name

	budget topicset.Budget // for destinations
	size   int             // of the file, in bytes (0: a File built in code)

	// Set when part of regions or links failed to decode: a reference
	// that does not resolve, or a missing link, is then most likely a
	// consequence of that error, so it is not reported again.
	regionsIncomplete, linksIncomplete bool
}

type gwKey struct{ region, gateway int }

// validate returns every problem with f, which applyDefaults has seen.
// pos, bad and exprs come from the decoder and may be nil.
func validate(f *File, file string, pos map[string]pos, bad map[string]bool, exprs *exprSources) Errors {
	v := &validator{
		f:          f,
		file:       file,
		pos:        pos,
		bad:        bad,
		exprs:      exprs,
		size:       exprs.fileSize(),
		linked:     make(map[[2]string]bool),
		linkOf:     make(map[gwKey]string),
		usedBy:     make(map[string]string),
		regionIdx:  make(map[string]int),
		gatewayIdx: make(map[string]gwKey),
	}
	for p := range bad {
		v.regionsIncomplete = v.regionsIncomplete || regionIdentityRE.MatchString(p)
		v.linksIncomplete = v.linksIncomplete || linkIdentityRE.MatchString(p)
	}
	v.version()
	v.gossip()
	v.linkTLS()
	v.defaults()
	v.regions()
	v.links()
	v.routes()
	v.destinations()
	v.gateways()
	return v.errs
}

// orList formats "a, b or c".
func orList(items []string) string {
	if len(items) < 2 {
		return strings.Join(items, "")
	}
	return strings.Join(items[:len(items)-1], ", ") + " or " + items[len(items)-1]
}

// parent drops the last element of a path: "a.b[2]" → "a.b" → "a".
func parent(path string) string {
	if strings.HasSuffix(path, "]") {
		if i := strings.LastIndexByte(path, '['); i >= 0 {
			return path[:i]
		}
	}
	if i := strings.LastIndexByte(path, '.'); i >= 0 {
		return path[:i]
	}
	return ""
}

// at is where path is written, or where its nearest written ancestor is
// (a missing field is reported at the mapping that lacks it).
func (v *validator) at(path string) pos { return lookupPos(v.pos, path) }

// Paths that, when they fail to decode, lose a region, cluster, gateway
// or link endpoint that other parts of the file may refer to.
var (
	regionIdentityRE = regexp.MustCompile(`^regions(\[\d+\](\.(clusters|gateways)(\[\d+\])?)?(\.name)?)?$`)
	linkIdentityRE   = regexp.MustCompile(`^links(\[\d+\](\.between(\[\d+\])?)?)?$`)
)

// refErrorf reports a reference that does not resolve, unless regions are
// incomplete (see validator.regionsIncomplete).
func (v *validator) refErrorf(path, format string, args ...any) {
	if !v.regionsIncomplete {
		v.errorf(path, format, args...)
	}
}

func (v *validator) has(path string) bool {
	_, ok := v.pos[path]
	return ok
}

func (v *validator) errorf(path, format string, args ...any) {
	v.errorAt(path, v.at(path), format, args...)
}

// errorAt reports a problem with the setting at path, placed at ps (inside
// its value, say).
func (v *validator) errorAt(path string, ps pos, format string, args ...any) {
	for p := path; ; p = parent(p) {
		if v.bad[p] {
			return // the decoder already explained this value
		}
		if p == "" {
			break
		}
	}
	v.errs = append(v.errs, &Error{
		File:   v.file,
		Line:   ps.line,
		Col:    ps.col,
		Path:   path,
		Reason: fmt.Sprintf(format, args...),
	})
}

// unique records name at path in seen, or reports it as a duplicate of the
// first path that used it. what reads like "region name".
func (v *validator) unique(seen map[string]string, name, path, what, extra string) {
	if first, dup := seen[name]; dup {
		v.errorf(path, "duplicate %s %q (first at line %d%s)", what, name, v.at(first).line, extra)
		return
	}
	seen[name] = path
}

// name checks a region, cluster, gateway, link or route name and reports
// whether it is usable.
func (v *validator) name(path, kind, name string) bool {
	if name == "" {
		v.errorf(path, "missing; every %s needs a name", kind)
		return false
	}
	if why := nameProblem(name); why != "" {
		v.errorf(path, "invalid %s name %q: %s", kind, name, why)
		return false
	}
	return true
}

// nameProblem says why name does not match ^[a-z0-9][a-z0-9._-]{0,62}$.
func nameProblem(name string) string {
	for _, c := range name {
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		case 'A' <= c && c <= 'Z':
			return fmt.Sprintf("uppercase %q not allowed; names are lowercase", c)
		default:
			return fmt.Sprintf("character %q not allowed; use lowercase letters, digits, '.', '_' and '-'", c)
		}
	}
	if c := name[0]; c == '.' || c == '_' || c == '-' {
		return "must start with a lowercase letter or digit"
	}
	if len(name) > 63 {
		return fmt.Sprintf("too long (%d characters, at most 63)", len(name))
	}
	return ""
}

func (v *validator) version() {
	switch v.f.Version {
	case 1:
	case 0:
		v.errorf("version", `missing; add "version: 1" at the top of the file`)
	default:
		v.errorf("version", "unsupported version %d; this meridian reads version 1", v.f.Version)
	}
}

func (v *validator) gossip() {
	if v.f.Gossip == nil {
		return
	}
	const hint = "generate one with: head -c 32 /dev/urandom | base64"
	for i, k := range v.f.Gossip.Keys {
		p := fmt.Sprintf("gossip.keys[%d]", i)
		// Never echo the key: it is a secret.
		b, err := base64.StdEncoding.DecodeString(k.Reveal())
		switch {
		case err != nil:
			v.errorf(p, "key is not valid base64; %s", hint)
		case len(b) != 16 && len(b) != 24 && len(b) != 32:
			v.errorf(p, "key is %d bytes; AES keys are 16, 24 or 32 bytes; %s", len(b), hint)
		}
	}
}

func (v *validator) linkTLS() {
	if v.f.TLS == nil {
		return
	}
	for i, s := range v.f.TLS.RevokedSerials {
		h := strings.ReplaceAll(strings.TrimSpace(s), ":", "")
		if h == "" || strings.Trim(h, "0123456789abcdefABCDEF") != "" {
			v.errorf(fmt.Sprintf("tls.revoked_serials[%d]", i), "serial number %q is not hex; write it as openssl prints it (for example 3f:a2:19)", s)
		}
	}
}

// badDefault reports whether defaults.<field> is set to an invalid value
// (already reported), so that links inheriting it stay quiet.
func (v *validator) badDefault(field, value string) bool {
	d := v.f.Defaults
	if d == nil {
		return false
	}
	switch field {
	case "profile":
		return d.Profile == value && !slices.Contains(profile.Names(), value)
	case "compression":
		return d.Compression == value && !slices.Contains(compressions, value)
	}
	return false
}

func (v *validator) defaults() {
	d := v.f.Defaults
	if d == nil {
		return
	}
	if d.Compression != "" {
		v.compression("defaults.compression", d.Compression)
	}
	if d.Profile != "" {
		v.profile("defaults.profile", d.Profile)
	}
}

func (v *validator) compression(path, c string) {
	if !slices.Contains(compressions, c) {
		v.errorf(path, "unknown compression %q; use %s", c, orList(compressions))
	}
}

// profile checks a link profile name against the embedded profiles
// (package topology/profile), so a new profile file is valid here too.
func (v *validator) profile(path, p string) {
	known := profile.Names()
	if !slices.Contains(known, p) {
		if c := closest(p, known); c != "" {
			v.errorf(path, "unknown profile %q (did you mean %q?)", p, c)
			return
		}
		v.errorf(path, "unknown profile %q; known profiles: %s", p, strings.Join(known, ", "))
	}
}

func (v *validator) regions() {
	if len(v.f.Regions) == 0 {
		v.errorf("regions", "at least one region is required")
		return
	}
	regions := make(map[string]string)
	gateways := make(map[string]string)
	for i, r := range v.f.Regions {
		rp := fmt.Sprintf("regions[%d]", i)
		if v.name(rp+".name", "region", r.Name) {
			v.unique(regions, r.Name, rp+".name", "region name", "")
		}
		if _, dup := v.regionIdx[r.Name]; !dup {
			v.regionIdx[r.Name] = i
		}
		clusters := make(map[string]string)
		for j, c := range r.Clusters {
			cp := fmt.Sprintf("%s.clusters[%d]", rp, j)
			if v.name(cp+".name", "cluster", c.Name) {
				v.unique(clusters, c.Name, cp+".name", "cluster name", fmt.Sprintf(", in the same region %q", r.Name))
			}
			v.cluster(cp, c)
		}
		for j, g := range r.Gateways {
			gp := fmt.Sprintf("%s.gateways[%d]", rp, j)
			if v.name(gp+".name", "gateway", g.Name) {
				if first, dup := gateways[g.Name]; dup {
					k := v.gatewayIdx[g.Name]
					v.errorf(gp+".name", "duplicate gateway name %q (first at line %d, in region %q); gateway names are unique across the file",
						g.Name, v.at(first).line, v.f.Regions[k.region].Name)
				} else {
					gateways[g.Name] = gp + ".name"
					v.gatewayIdx[g.Name] = gwKey{i, j}
				}
			}
			v.gateway(gp, g)
		}
	}
}

func (v *validator) cluster(cp string, c Cluster) {
	switch c.Kind {
	case "kafka":
		if c.AMQP != nil {
			v.errorf(cp+".amqp", `only for kind "amqp"; this cluster's kind is "kafka"`)
		}
	case "amqp":
		v.amqpCluster(cp, c)
		return
	case "":
		v.errorf(cp+".kind", `missing; set "kind: kafka" or "kind: amqp"`)
	default:
		v.errorf(cp+".kind", `unsupported cluster kind %q; use "kafka" or "amqp"`, c.Kind)
	}
	if len(c.Bootstrap) == 0 {
		v.errorf(cp+".bootstrap", "at least one broker address (host:port) is required")
	}
	for k, addr := range c.Bootstrap {
		v.hostPort(fmt.Sprintf("%s.bootstrap[%d]", cp, k), addr, true)
	}
	if t := c.TLS; t != nil && (t.Enabled == nil || *t.Enabled) {
		switch {
		case t.CertFile != "" && t.KeyFile == "":
			v.errorf(cp+".tls.key_file", "required when cert_file is set (client certificate needs its key)")
		case t.KeyFile != "" && t.CertFile == "":
			v.errorf(cp+".tls.cert_file", "required when key_file is set (client key needs its certificate)")
		}
	}
	if s := c.SASL; s != nil {
		sp := cp + ".sasl"
		switch {
		case s.Mechanism == "":
			v.errorf(sp+".mechanism", "missing; use %s", orList(saslMechanisms))
		case !slices.Contains(saslMechanisms, s.Mechanism):
			v.errorf(sp+".mechanism", "unknown SASL mechanism %q; use %s", s.Mechanism, orList(saslMechanisms))
		}
		if s.Username == "" {
			v.errorf(sp+".username", "missing; sasl needs a username")
		}
		if s.Password == "" {
			v.errorf(sp+".password", "missing; sasl needs a password (use ${ENV} to keep it out of the file)")
		}
	}
}

// amqpOnly reports whether gateway g of region r carries amqp links and
// no quic link: it listens on nothing (its sessions go through brokers).
func (v *validator) amqpOnly(r string, g string) bool {
	var amqp, quic bool
	for _, l := range v.f.Links {
		for _, ref := range l.Between {
			rn, gn, pinned := strings.Cut(ref, "/")
			if rn != r || pinned && gn != g {
				continue
			}
			switch l.Transport {
			case "amqp":
				amqp = true
			case "quic":
				quic = true
			}
		}
	}
	return amqp && !quic
}

func (v *validator) gateway(gp string, g Gateway) {
	if g.Listen == "" {
		if region := v.f.Regions[v.regionOf(gp)]; !v.amqpOnly(region.Name, g.Name) && !v.dialsAll(region.Name, g.Name) {
			v.errorf(gp+".listen", "missing; set the host:port this gateway listens on for links")
		}
	} else {
		v.hostPort(gp+".listen", g.Listen, false)
	}
	if g.Advertise != "" {
		if host, ok := v.hostPort(gp+".advertise", g.Advertise, true); ok && unspecified(host) {
			v.errorf(gp+".advertise", "%q is not an address peers can dial; use this gateway's reachable host or IP", g.Advertise)
		}
	}
	if g.Admin != nil {
		v.admin(gp, g)
	}
	if g.Gossip != nil {
		v.gatewayGossip(gp, g)
	}
}

func (v *validator) gatewayGossip(gp string, g Gateway) {
	gg, p := g.Gossip, gp+".gossip"
	if gg.Listen == "" {
		v.errorf(p+".listen", "missing; set the UDP host:port of this gateway's QUIC gossip")
	} else if host, ok := v.hostPort(p+".listen", gg.Listen, false); ok && gg.Advertise == "" && unspecified(host) {
		v.errorf(p+".advertise", "required because gossip.listen %q has no specific host; peers need an address to dial", gg.Listen)
	}
	if gg.Advertise != "" {
		if host, ok := v.hostPort(p+".advertise", gg.Advertise, true); ok && unspecified(host) {
			v.errorf(p+".advertise", "%q is not an address peers can dial", gg.Advertise)
		}
	}
	if t := g.TLS; t == nil || t.CAFile == "" || t.CertFile == "" || t.KeyFile == "" {
		v.errorf(p, "gossip runs over QUIC with the link certificates: set the gateway's tls ca_file, cert_file and key_file")
	}
	if gg.Region != "" {
		if host, ok := v.hostPort(p+".region", gg.Region, true); ok && unspecified(host) {
			v.errorf(p+".region", "%q: region gossip advertises this address, so it needs a specific host", gg.Region)
		}
		if v.f.Gossip == nil || len(v.f.Gossip.Keys) == 0 {
			v.errorf(p+".region", "gossip on a plain UDP/TCP port must be encrypted: add gossip.keys (base64 AES keys, as ${ENV})")
		}
	}
}

func (v *validator) admin(gp string, g Gateway) {
	a, ap := g.Admin, gp+".admin"
	if a.Listen == "" {
		v.errorf(ap+".listen", "missing; set the host:port of the admin API")
	} else {
		v.hostPort(ap+".listen", a.Listen, false)
	}
	if n := len(a.Token); n > 0 && n < AdminTokenMin {
		v.errorf(ap+".token", "%d characters; use at least %d (e.g. openssl rand -hex 16)", n, AdminTokenMin)
	}
	if a.MTLS && (g.TLS == nil || g.TLS.CAFile == "" || g.TLS.CertFile == "" || g.TLS.KeyFile == "") {
		v.errorf(ap+".mtls", "needs the gateway's tls ca_file, cert_file and key_file (the admin API serves that certificate and checks clients against that CA)")
	}
	for i, o := range a.Open {
		if !slices.Contains(AdminReads, o) {
			v.errorf(fmt.Sprintf("%s.open[%d]", ap, i), "unknown endpoint %q; use %s (mutating endpoints are never open)", o, orList(AdminReads))
		}
	}
	if i := slices.Index(a.Open, "ui"); i >= 0 && !slices.Contains(a.Open, "status") {
		v.errorf(fmt.Sprintf("%s.open[%d]", ap, i), "ui without status: the status page reads /status, so open status too or neither")
	}
	for i, h := range a.Hosts {
		if h == "" || strings.ContainsAny(h, "/ :") && net.ParseIP(h) == nil {
			v.errorf(fmt.Sprintf("%s.hosts[%d]", ap, i), "invalid host name %q; want a name or IP address without scheme or port", h)
		}
	}
}

func unspecified(host string) bool {
	ip, err := netip.ParseAddr(host)
	return host == "" || err == nil && ip.IsUnspecified()
}

// hostPort checks a host:port address and returns its host. needHost is
// set for addresses that are dialled (an empty host would mean localhost).
func (v *validator) hostPort(path, addr string, needHost bool) (host string, ok bool) {
	if scheme, _, found := strings.Cut(addr, "://"); found {
		v.errorf(path, "invalid address %q: drop the %q scheme; want host:port", addr, scheme+"://")
		return "", false
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		reason := err.Error()
		if ae, isAddr := errors.AsType[*net.AddrError](err); isAddr {
			reason = ae.Err
		}
		v.errorf(path, "invalid address %q: %s; want host:port", addr, reason)
		return "", false
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		v.errorf(path, "invalid port %q in %q: must be a number from 1 to 65535", port, addr)
		return "", false
	}
	if needHost && host == "" {
		v.errorf(path, "missing host in %q; want host:port", addr)
		return "", false
	}
	if strings.ContainsAny(host, " \t/") {
		v.errorf(path, "invalid host %q in %q", host, addr)
		return "", false
	}
	return host, true
}

// endpoint resolves one end of a link to a region index and a gateway
// index (-1: every gateway of the region).
func (v *validator) endpoint(path, ref string) (region, gateway int, ok bool) {
	if ref == "" {
		v.errorf(path, "empty endpoint; name a region or a region/gateway")
		return 0, 0, false
	}
	rn, gn := ref, ""
	if strings.Contains(ref, "/") {
		if rn, gn, ok = SplitRef(ref); !ok {
			v.errorf(path, "invalid endpoint %q; want a region or a region/gateway", ref)
			return 0, 0, false
		}
	}
	ri, ok := v.regionIdx[rn]
	if !ok {
		v.refErrorf(path, "unknown region %q (regions: %s)", rn, v.regionNames())
		return 0, 0, false
	}
	if gn == "" {
		return ri, -1, true
	}
	for j, g := range v.f.Regions[ri].Gateways {
		if g.Name == gn {
			return ri, j, true
		}
	}
	if k, elsewhere := v.gatewayIdx[gn]; elsewhere {
		v.refErrorf(path, "region %q has no gateway %q (it is in region %q)", rn, gn, v.f.Regions[k.region].Name)
	} else {
		v.refErrorf(path, "region %q has no gateway %q", rn, gn)
	}
	return 0, 0, false
}

func (v *validator) regionNames() string {
	var names []string
	for _, r := range v.f.Regions {
		if r.Name != "" {
			names = append(names, strconv.Quote(r.Name))
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

func pair(a, b string) [2]string {
	if a > b {
		a, b = b, a
	}
	return [2]string{a, b}
}

func (v *validator) links() {
	joined := 0 // links whose two regions are known and differ
	defer func() {
		if joined == len(v.f.Links) {
			v.reachable()
		}
	}()
	names := make(map[string]string)
	endpoints := make(map[[2]string]string) // sorted endpoint refs → first link path
	for i, l := range v.f.Links {
		lp := fmt.Sprintf("links[%d]", i)
		if l.Name != "" && v.name(lp+".name", "link", l.Name) {
			extra := ""
			if !v.has(lp + ".name") {
				extra = `; this name comes from "between", so set "name" on one of them`
			}
			if first, dup := names[l.Name]; dup {
				v.errorf(lp+".name", "duplicate link name %q (first at line %d)%s", l.Name, v.at(first).line, extra)
			} else {
				names[l.Name] = lp + ".name"
			}
		}
		switch l.Transport {
		case "quic":
			if l.AMQP != nil {
				v.errorf(lp+".amqp", `only for transport "amqp"; this link's transport is %q`, l.Transport)
			}
		case "amqp":
			v.amqp(lp, l.AMQP)
		default:
			v.errorf(lp+".transport", `unsupported transport %q; use "quic" or "amqp"`, l.Transport)
		}
		if !v.badDefault("profile", l.Profile) || v.has(lp+".profile") {
			v.profile(lp+".profile", l.Profile)
		}
		if !v.badDefault("compression", l.Compression) || v.has(lp+".compression") {
			v.compression(lp+".compression", l.Compression)
		}
		// The decoder parsed rate_limit and window (and reported bad ones
		// where they are written); a File built in code may still hold
		// negative numbers.
		if l.RateLimit < 0 {
			v.errorf(lp+".rate_limit", "must not be negative, got %d bit/s", l.RateLimit)
		}
		if l.Window < 0 {
			v.errorf(lp+".window", "must not be negative, got %d bytes", l.Window)
		}
		if l.Cost < 0 || l.Cost > maxLinkCost {
			v.errorf(lp+".cost", "must be between 1 and %d (0 = the profile's default), got %d", maxLinkCost, l.Cost)
		}
		if l.HoldDown < 0 {
			v.errorf(lp+".hold_down", "must not be negative, got %v", l.HoldDown)
		} else if l.HoldDown > 0 && l.HoldDown < time.Second {
			v.errorf(lp+".hold_down", "%v is too short; hold_down must be at least 1s, or a flapping link moves legs back and forth", l.HoldDown)
		}

		bp := lp + ".between"
		if len(l.Between) != 2 {
			v.errorf(bp, "needs exactly two endpoints (regions or region/gateway), got %d", len(l.Between))
			continue
		}
		r0, g0, ok0 := v.endpoint(bp+"[0]", l.Between[0])
		r1, g1, ok1 := v.endpoint(bp+"[1]", l.Between[1])
		if !ok0 || !ok1 {
			continue
		}
		ra, rb := v.f.Regions[r0].Name, v.f.Regions[r1].Name
		if r0 == r1 {
			v.errorf(bp+"[1]", "both endpoints are in region %q; a link joins two different regions", ra)
			continue
		}
		joined++
		v.linkDial(lp, l, ra, rb)
		key := pair(l.Between[0], l.Between[1])
		if first, dup := endpoints[key]; dup {
			v.errorf(bp, "duplicate link between %q and %q (first at line %d)", key[0], key[1], v.at(first).line)
			continue
		}
		endpoints[key] = bp
		v.linked[pair(ra, rb)] = true
		for _, e := range []struct{ r, g int }{{r0, g0}, {r1, g1}} {
			name := v.f.Regions[e.r].Name
			if _, seen := v.usedBy[name]; !seen {
				v.usedBy[name] = fmt.Sprintf("link %q", l.Name)
			}
			if l.Transport != "quic" {
				continue
			}
			for j := range v.f.Regions[e.r].Gateways {
				k := gwKey{e.r, j}
				if _, seen := v.linkOf[k]; !seen && (e.g < 0 || e.g == j) {
					v.linkOf[k] = l.Name
				}
			}
		}
	}
}

// reachable rejects regions that no chain of links joins to the others:
// gossip could not reach their gateways, nor any route their clusters.
// The regions joined to the most others (on a tie, those with the first
// region) are the fleet; each region outside is named at its entry.
func (v *validator) reachable() {
	rs := v.f.Regions
	if len(rs) < 2 {
		return
	}
	comp := make([]int, len(rs))
	for i := range comp {
		comp[i] = i
	}
	var find func(int) int
	find = func(i int) int {
		if comp[i] != i {
			comp[i] = find(comp[i])
		}
		return comp[i]
	}
	index := map[string]int{}
	for i, r := range rs {
		if _, dup := index[r.Name]; dup {
			return // reported as a duplicate: the links cannot be told apart
		}
		index[r.Name] = i
	}
	for k := range v.linked {
		a, okA := index[k[0]]
		b, okB := index[k[1]]
		if okA && okB {
			comp[find(a)] = find(b)
		}
	}
	size := map[int]int{}
	for i := range rs {
		size[find(i)]++
	}
	main := find(0)
	for i := range rs {
		if c := find(i); size[c] > size[main] {
			main = c
		}
	}
	var fleet, cut []string
	for i, r := range rs {
		if find(i) == main {
			fleet = append(fleet, r.Name)
		} else {
			cut = append(cut, r.Name)
		}
	}
	for i, r := range rs {
		if find(i) != main {
			v.errorf(fmt.Sprintf("regions[%d]", i), "region %q is cut off: no chain of links joins it to %s (cut off: %s); add a link", r.Name, quoteList(fleet), strings.Join(cut, ", "))
		}
	}
}

func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strconv.Quote(n)
	}
	return strings.Join(q, ", ")
}

// linkDial checks links[i].dial: one of the link's two regions ra and rb,
// and only on a quic link.
func (v *validator) linkDial(lp string, l Link, ra, rb string) {
	if l.Dial == "" {
		return
	}
	dp := lp + ".dial"
	switch {
	case l.Transport == "amqp":
		v.errorf(dp, "only for quic links; both gateways of an amqp link connect out to its broker, so neither dials the other")
	case l.Dial == ra || l.Dial == rb:
	case strings.Contains(l.Dial, "/"):
		r, _, _ := strings.Cut(l.Dial, "/")
		v.errorf(dp, "%q: name the region whose gateway dials (%q), not a gateway; pin the gateway in between instead", l.Dial, r)
	default:
		v.errorf(dp, "%q is not one of the link's regions; want %q or %q", l.Dial, ra, rb)
	}
}

// dialsAll reports whether every quic link of gateway g of region r is
// dialled from r (links[].dial or its default, File.DialSide): peers
// never dial g, which then needs no listen address for links.
func (v *validator) dialsAll(r string, g string) bool {
	for _, rt := range v.f.Routes {
		for _, to := range rt.To {
			if fr, _, _ := strings.Cut(rt.From, "/"); fr == r && strings.HasPrefix(to, r+"/") {
				return false // a local leg: the region's gateways dial its first one
			}
		}
	}
	some := false
	for i, l := range v.f.Links {
		if l.Transport != "quic" {
			continue
		}
		for _, ref := range l.Between {
			rn, gn, pinned := strings.Cut(ref, "/")
			if rn != r || pinned && gn != g {
				continue
			}
			if v.f.DialSide(i) != r {
				return false
			}
			some = true
		}
	}
	return some
}

// clusterRef checks a "region/cluster" reference and returns the region
// name, or "" when the reference is not valid.
func (v *validator) clusterRef(path, ref string) string {
	if ref == "" {
		v.errorf(path, "missing; name a cluster as region/cluster")
		return ""
	}
	rn, cn, ok := SplitRef(ref)
	if !ok {
		v.errorf(path, "unknown cluster %q: want region/cluster, e.g. %q", ref, v.exampleRef())
		return ""
	}
	ri, ok := v.regionIdx[rn]
	if !ok {
		v.refErrorf(path, "unknown cluster %q: no region %q (regions: %s)", ref, rn, v.regionNames())
		return ""
	}
	var have []string
	for _, c := range v.f.Regions[ri].Clusters {
		if c.Name == cn {
			return rn
		}
		if c.Name != "" {
			have = append(have, strconv.Quote(c.Name))
		}
	}
	if len(have) == 0 {
		v.refErrorf(path, "unknown cluster %q: region %q has no clusters", ref, rn)
	} else {
		v.refErrorf(path, "unknown cluster %q: region %q has no cluster %q (it has: %s)", ref, rn, cn, strings.Join(have, ", "))
	}
	return ""
}

func (v *validator) exampleRef() string {
	for _, r := range v.f.Regions {
		for _, c := range r.Clusters {
			if r.Name != "" && c.Name != "" {
				return r.Name + "/" + c.Name
			}
		}
	}
	return "hq/kafka"
}

func (v *validator) routes() {
	names := make(map[string]string)
	for i, r := range v.f.Routes {
		rp := fmt.Sprintf("routes[%d]", i)
		if v.name(rp+".name", "route", r.Name) {
			v.unique(names, r.Name, rp+".name", "route name", "")
		}
		use := func(region string) {
			if _, seen := v.usedBy[region]; !seen && region != "" {
				v.usedBy[region] = fmt.Sprintf("route %q", r.Name)
			}
		}
		from := v.clusterRef(rp+".from", r.From)
		use(from)
		if len(r.To) == 0 {
			v.errorf(rp+".to", "at least one destination cluster (region/cluster) is required")
		}
		seen := make(map[string]int)
		for j, to := range r.To {
			tp := fmt.Sprintf("%s.to[%d]", rp, j)
			if to != "" && to == r.From {
				v.errorf(tp, "same cluster as from (%q); a route cannot mirror a cluster into itself", to)
				continue
			}
			if k, dup := seen[to]; dup {
				v.errorf(tp, "duplicate destination %q (also to[%d])", to, k)
				continue
			}
			seen[to] = j
			dest := v.clusterRef(tp, to)
			use(dest)
			if from != "" && dest != "" && from != dest && !v.linked[pair(from, dest)] && !v.linksIncomplete {
				hint := ""
				if nameProblem(from) == "" && nameProblem(dest) == "" {
					hint = fmt.Sprintf("; add a link with between: [%s, %s]", from, dest)
				}
				v.errorf(tp, "no link between regions %q and %q%s", from, dest, hint)
			}
		}
		tp := rp + ".topics"
		if len(r.Topics.Include) == 0 {
			v.errorf(tp+".include", `at least one pattern is required (".*" matches every topic)`)
		}
		for j, re := range r.Topics.Include {
			v.pattern(fmt.Sprintf("%s.include[%d]", tp, j), re)
		}
		for j, re := range r.Topics.Exclude {
			v.pattern(fmt.Sprintf("%s.exclude[%d]", tp, j), re)
		}
		if g := r.Groups; g != nil {
			gp := rp + ".groups"
			if len(g.Include) == 0 {
				v.errorf(gp+".include", `at least one pattern is required (".*" syncs every group)`)
			}
			for j, re := range g.Include {
				v.pattern(fmt.Sprintf("%s.include[%d]", gp, j), re)
			}
			for j, re := range g.Exclude {
				v.pattern(fmt.Sprintf("%s.exclude[%d]", gp, j), re)
			}
		}
		v.filterExpr(rp, r)
		for _, why := range renameProblems(r.Rename, r.Topics.Include) {
			v.errorf(rp+".rename", "%s", why)
		}
		if strings.HasPrefix(r.Rename, "__") {
			v.errorf(rp+".rename", "%q makes internal topic names (starting with \"__\"), which receivers refuse", r.Rename)
		}
		if r.StartAt != "earliest" && r.StartAt != "latest" {
			v.errorf(rp+".start_at", "unknown start_at %q; use earliest or latest", r.StartAt)
		}
		if r.Discover < minDiscover {
			v.errorf(rp+".discover", "%v is too short; discover must be at least %v", r.Discover, minDiscover)
		}
		if r.ShareTimeout < time.Second || r.ShareTimeout > 30*time.Minute {
			v.errorf(rp+".share_timeout", "%v is out of range; share_timeout must be between 1s and 30m (and within the source brokers' group.min/max.session.timeout.ms)", r.ShareTimeout)
		}
		if r.MaxPartitions < 1 || r.MaxPartitions > MaxMaxPartitions {
			v.errorf(rp+".max_partitions", "%d is out of range; max_partitions must be between 1 and %d", r.MaxPartitions, MaxMaxPartitions)
		}
		v.amqpRoute(rp, r)
	}
}

// quote shows a pattern the way it is usually written in YAML: without
// Go's doubled backslashes when that is unambiguous.
func quote(s string) string {
	if strings.Contains(s, `\`) && strconv.CanBackquote(s) {
		return "`" + s + "`"
	}
	return strconv.Quote(s)
}

func (v *validator) pattern(path, re string) {
	if re == "" {
		v.errorf(path, "empty pattern (use \".*\" to match every topic)")
		return
	}
	_, err := regexp.Compile(re)
	if err == nil {
		return
	}
	reason := err.Error()
	if se, ok := errors.AsType[*syntax.Error](err); ok {
		reason = string(se.Code)
		if se.Expr != re {
			reason += " at " + quote(se.Expr)
		}
	}
	v.errorf(path, "invalid regular expression %s: %s", quote(re), reason)
}

// renameProblems checks a rename template: placeholders from
// renamePlaceholders or capture groups of every include pattern ({1},
// {name}), {topic} or a group present, and otherwise only characters
// Kafka allows in topic names.
func renameProblems(t string, include []string) []string {
	var out []string
	hasTopic, badChar := false, false
	for i := 0; i < len(t); {
		switch c := t[i]; {
		case c == '{':
			end := strings.IndexByte(t[i:], '}')
			if end < 0 {
				out = append(out, fmt.Sprintf("unclosed %q in %q", "{", t))
				i = len(t)
				continue
			}
			ph := t[i+1 : i+end]
			switch {
			case ph == "topic":
				hasTopic = true
			case slices.Contains(renamePlaceholders, ph):
			case groupPlaceholderRE.MatchString(ph) && (ph[0] <= '9' || namedBySome(ph, include)):
				if why := groupProblem(ph, include); why != "" {
					out = append(out, fmt.Sprintf("placeholder {%s} in %q: %s", ph, t, why))
				}
				hasTopic = true
			default:
				out = append(out, fmt.Sprintf("unknown placeholder {%s} in %q; use {topic}, {source_region}, {source_cluster} or a capture group of the include patterns ({1}, {name})", ph, t))
			}
			i += end + 1
		case c == '}':
			out = append(out, fmt.Sprintf("unmatched %q in %q", "}", t))
			i++
		default:
			if !topicChar(c) && !badChar {
				badChar = true
				out = append(out, fmt.Sprintf("character %q in %q is not allowed in Kafka topic names; use letters, digits, '.', '_' and '-'", rune(c), t))
			}
			i++
		}
	}
	if !hasTopic {
		out = append(out, fmt.Sprintf("%q must contain {topic} or a capture group of the include patterns, or every source topic would land in the same destination topic", t))
	}
	return out
}

// groupPlaceholderRE matches a capture group placeholder: a group number
// from 1, or a group name.
var groupPlaceholderRE = regexp.MustCompile(`^([1-9][0-9]{0,2}|[A-Za-z_][A-Za-z0-9_]*)$`)

// namedBySome reports whether an include pattern has a group named name.
func namedBySome(name string, include []string) bool {
	for _, p := range include {
		if re, err := regexp.Compile(p); err == nil && re.SubexpIndex(name) >= 0 {
			return true
		}
	}
	return false
}

// groupProblem says why capture group ph is not defined by every include
// pattern ("" when it is). A rename takes the groups of the first include
// that matches a topic, so each must have the group. Patterns that do not
// compile are reported on their own.
func groupProblem(ph string, include []string) string {
	n, err := strconv.Atoi(ph)
	for j, p := range include {
		re, cerr := regexp.Compile(p)
		if cerr != nil {
			continue
		}
		switch {
		case err == nil && re.NumSubexp() < n:
			return fmt.Sprintf("topics.include[%d] %s has %d capture groups; every include pattern needs group %d", j, quote(p), re.NumSubexp(), n)
		case err != nil && re.SubexpIndex(ph) < 0:
			return fmt.Sprintf("topics.include[%d] %s has no group named %q (write (?P<%s>...)); every include pattern needs it", j, quote(p), ph, ph)
		}
	}
	return ""
}

func topicChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-'
}

// gateways runs the checks that depend on links: TLS for quic, an address
// peers can dial, and at least one gateway in every region in use.
func (v *validator) gateways() {
	for i, r := range v.f.Regions {
		rp := fmt.Sprintf("regions[%d]", i)
		if len(r.Gateways) == 0 && r.Name != "" {
			if by, used := v.usedBy[r.Name]; used {
				v.errorf(rp+".gateways", "region %q has no gateways, but %s uses it; add a gateway to run its links and mirrors", r.Name, by)
			}
		}
		for j, g := range r.Gateways {
			gp := fmt.Sprintf("%s.gateways[%d]", rp, j)
			v.gatewayTLSUnused(gp, g.TLS)
			link, ok := v.linkOf[gwKey{i, j}]
			if !ok {
				continue
			}
			v.gatewayTLS(gp, g, link)
			if g.Advertise == "" && g.Listen != "" && !v.dialsAll(r.Name, g.Name) {
				if host, _, err := net.SplitHostPort(g.Listen); err == nil && unspecified(host) {
					v.errorf(gp+".advertise", "required because listen %q has no specific host; peers on link %q need an address to dial", g.Listen, link)
				}
			}
		}
	}
}

func (v *validator) gatewayTLS(gp string, g Gateway, link string) {
	t := g.TLS
	if t == nil {
		v.errorf(gp+".tls", "missing; gateway %q carries quic link %q, which needs mutual TLS (ca_file, cert_file, key_file)", g.Name, link)
		return
	}
	if t.Enabled != nil && !*t.Enabled {
		v.errorf(gp+".tls.enabled", "quic link %q needs TLS; remove \"enabled: false\"", link)
		return
	}
	var missing []string
	for _, f := range []struct{ name, value string }{
		{"ca_file", t.CAFile}, {"cert_file", t.CertFile}, {"key_file", t.KeyFile},
	} {
		if f.value == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		v.errorf(gp+".tls", "missing %s; quic link %q needs mutual TLS", strings.Join(missing, ", "), link)
	}
}

// gatewayTLSUnused rejects the TLS settings that link mTLS does not use,
// rather than ignoring them: a peer is always verified against ca_file
// under its gateway name.
func (v *validator) gatewayTLSUnused(gp string, t *TLS) {
	if t == nil {
		return
	}
	if t.ServerName != "" {
		v.errorf(gp+".tls.server_name", "not used for links: a peer gateway's certificate must name that gateway; remove server_name")
	}
	if t.InsecureSkipVerify {
		v.errorf(gp+".tls.insecure_skip_verify", "not allowed for links: peers are always verified against ca_file; remove insecure_skip_verify")
	}
}

// warnings lists the settings of a valid file that are accepted but have
// no effect yet, each at its position with the reason.
func warnings(f *File, file string, pos map[string]pos) Errors {
	var ws Errors
	warn := func(path, format string, args ...any) {
		p := lookupPos(pos, path)
		ws = append(ws, &Error{File: file, Line: p.line, Col: p.col, Path: path, Reason: fmt.Sprintf(format, args...)})
	}
	for i, r := range f.Regions {
		for j, g := range r.Gateways {
			a := g.Admin
			if a == nil || a.MTLS {
				continue
			}
			host, _, err := net.SplitHostPort(a.Listen)
			if err != nil {
				continue
			}
			ap := fmt.Sprintf("regions[%d].gateways[%d].admin", i, j)
			switch ip, ipErr := netip.ParseAddr(host); {
			case a.Token == "" && unspecified(host):
				warn(ap, "admin API %s listens on all interfaces without authentication: anyone who reaches it reads /status and /metrics (failover is refused except from loopback); set admin.token or admin.mtls, or listen on 127.0.0.1", a.Listen)
			case a.Token != "" && host != "localhost" && (ipErr != nil || !ip.IsLoopback()):
				warn(ap+".token", "the admin token crosses the network in clear text (plain HTTP on %s); set admin.mtls to serve HTTPS", a.Listen)
			}
		}
	}
	passthroughWarnings(f, warn)
	cycleWarnings(f, warn)
	splitReceiverWarnings(f, warn)
	if f.Gossip != nil && len(f.Gossip.Keys) > 0 && !regionGossip(f) {
		warn("gossip.keys", "no gateway gossips on a plain port (gateways[].gossip.region), so the keys are checked but unused: QUIC gossip is protected by the link certificates")
	}
	return ws.sorted()
}

// regionOf is the region index of a path "regions[N]...".
func (v *validator) regionOf(path string) int {
	var n int
	fmt.Sscanf(path, "regions[%d]", &n)
	return n
}

// regionGossip reports whether some gateway gossips on a plain port.
func regionGossip(f *File) bool {
	for _, r := range f.Regions {
		for _, g := range r.Gateways {
			if g.Gossip != nil && g.Gossip.Region != "" {
				return true
			}
		}
	}
	return false
}
