//go:build linux

package netlab

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/meridian-gw/meridian/chaos"
	"github.com/meridian-gw/meridian/topology/profile"
)

// Prefix is the only address range a lab uses: the benchmarking range of
// RFC 2544. Region i (from 0) is 198.18.<i+1>.1/24.
var Prefix = netip.MustParsePrefix("198.18.0.0/15")

// MaxRegions caps the regions of one lab; the pump runs one goroutine per
// region and two per pair of regions.
const MaxRegions = 16

// DefaultNamePrefix prefixes named namespaces: region edge becomes
// meridian-edge, for `ip netns exec meridian-edge ...`.
const DefaultNamePrefix = "meridian-"

// Options configure a lab. The zero value of each field is documented.
type Options struct {
	// Regions names the regions, in order; at least 2, at most MaxRegions,
	// each unique, of lower-case letters, digits and '-' (up to 32).
	// Region i gets the address 198.18.<i+1>.1/24.
	Regions []string
	// Profile is the link profile of every link that Links does not name.
	// nil = a perfect link (no delay, loss or rate limit; MTU 1500).
	Profile *chaos.Profile
	// Links sets the profile of single links, keyed by link name
	// ("edge--hq": the two regions in Regions order, the first being the
	// Up side). A nil value is a perfect link.
	Links map[string]*chaos.Profile
	// Seed seeds the impairments; 0 = pick one at random. Lab.Seed returns
	// it either way, so a failing test can print it.
	Seed uint64
	// Named also bind-mounts each namespace at /run/netns/<NamePrefix><region>
	// so that `ip netns exec` and other tools reach it; Close removes them.
	// false = the namespaces are anonymous and vanish with the process.
	Named bool
	// NamePrefix prefixes named namespaces. "" = DefaultNamePrefix.
	NamePrefix string
	// TCPCongestion sets the TCP congestion control ("cubic", "reno",
	// "bbr": one the kernel offers) of the TCP sockets that Listen and
	// DialContext make; accepted connections inherit it from their
	// listener. It is set per socket (TCP_CONGESTION) because a namespace
	// may only pick from the host's allowed list. "" = the namespace's
	// default, which follows the host's.
	TCPCongestion string
	// Logger receives lifecycle logs. nil = discard.
	Logger *slog.Logger
}

var regionName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)

// Lab is a running packet-level network lab: one network namespace per
// region, each with a TUN device, joined by emulated links. See the package
// doc. Close it to tear everything down.
type Lab struct {
	log     *slog.Logger
	tcpCC   string
	seed    uint64
	start   time.Time
	regions []*region
	byName  map[string]*region
	links   []*Link
	quit    chan struct{}
	wg      sync.WaitGroup // the pump: readers and delivery loops

	closeOnce sync.Once
	closeErr  error

	mu     sync.Mutex // guards closed, link profiles and MTUs
	closed bool
}

// region is one namespace with its TUN device.
type region struct {
	name   string
	idx    int
	addr   netip.Addr
	prefix netip.Prefix
	ns     *os.File        // the namespace; nil until created
	nl     *netlink.Handle // netlink sockets inside the namespace
	tun    *os.File
	link   netlink.Link // the TUN device, as netlink sees it
	named  string       // bind mount path, or ""
	out    []*chaos.Pipe[*region]
	mtu    int // device MTU; guarded by Lab.mu

	read, unroutable, readErrs atomic.Uint64
}

// Link is the emulated link between two regions. Up is from the first
// region (A) to the second (B), Down the reverse.
type Link struct {
	lab      *Lab
	name     string
	a, b     *region
	up, down *chaos.Pipe[*region]
	profile  *chaos.Profile // guarded by lab.mu
}

// LinkName is the name of the link between regions a and b, with a first.
func LinkName(a, b string) string { return a + "--" + b }

// New builds a lab: it creates the namespaces and TUN devices, configures
// addresses and routes and starts the pump. It needs root (see Check).
func New(opts Options) (l *Lab, err error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("new lab: %w", err)
	}
	seed := opts.Seed
	for seed == 0 {
		seed = rand.Uint64()
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "chaos.netlab")
	prefix := opts.NamePrefix
	if prefix == "" {
		prefix = DefaultNamePrefix
	}

	l = &Lab{
		tcpCC:  opts.TCPCongestion,
		log:    log,
		seed:   seed,
		start:  time.Now(),
		byName: map[string]*region{},
		quit:   make(chan struct{}),
	}
	self := l // the returns below may set l to nil
	defer func() {
		if err != nil {
			self.Close()
			l = nil
		}
	}()
	for i, name := range opts.Regions {
		pfx := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i + 1), 0}), 24)
		r := &region{name: name, idx: i, prefix: pfx, addr: pfx.Addr().Next(), out: make([]*chaos.Pipe[*region], len(opts.Regions))}
		l.regions = append(l.regions, r)
		l.byName[name] = r
	}
	for i, a := range l.regions {
		for _, b := range l.regions[i+1:] {
			name := LinkName(a.name, b.name)
			p := opts.Profile
			if lp, ok := opts.Links[name]; ok {
				p = lp
			}
			if p != nil {
				p = p.Clone()
			}
			lseed := splitmix(seed + uint64(len(l.links)))
			up, err := chaos.NewImpairment(p, chaos.Up, lseed, l.start)
			if err != nil {
				return nil, fmt.Errorf("new lab: link %s: %w", name, err)
			}
			down, err := chaos.NewImpairment(p, chaos.Down, lseed, l.start)
			if err != nil {
				return nil, fmt.Errorf("new lab: link %s: %w", name, err)
			}
			lk := &Link{lab: l, name: name, a: a, b: b, profile: p,
				up: chaos.NewPipe(up, sendTUN), down: chaos.NewPipe(down, sendTUN)}
			a.out[b.idx], b.out[a.idx] = lk.up, lk.down
			l.links = append(l.links, lk)
		}
	}

	if err := l.setupRegions(opts.Named, prefix); err != nil {
		return nil, fmt.Errorf("new lab: %w", err)
	}

	for _, lk := range l.links {
		l.wg.Go(func() { lk.up.Run(l.quit) })
		l.wg.Go(func() { lk.down.Run(l.quit) })
	}
	for _, r := range l.regions {
		l.wg.Go(func() { l.readLoop(r) })
	}
	for _, r := range l.regions {
		log.Info("lab region up", "region", r.name, "addr", r.addr.String(), "mtu", r.mtu, "named", r.named)
	}
	for _, lk := range l.links {
		log.Info("lab link up", "link", lk.name, "profile", lk.profile.String())
	}
	log.Info("lab started", "regions", len(l.regions), "links", len(l.links), "seed", seed)
	return l, nil
}

func (o *Options) validate() error {
	var errs []error
	if n := len(o.Regions); n < 2 || n > MaxRegions {
		errs = append(errs, fmt.Errorf("regions: want 2 to %d, got %d", MaxRegions, n))
	}
	seen := map[string]bool{}
	for i, r := range o.Regions {
		if !regionName.MatchString(r) {
			errs = append(errs, fmt.Errorf("regions[%d]: %q is not a region name (lower-case letters, digits and '-', up to 32)", i, r))
		}
		if seen[r] {
			errs = append(errs, fmt.Errorf("regions[%d]: %q named twice", i, r))
		}
		seen[r] = true
	}
	links := map[string]bool{}
	for i, a := range o.Regions {
		for _, b := range o.Regions[i+1:] {
			links[LinkName(a, b)] = true
		}
	}
	for name, p := range o.Links {
		if !links[name] {
			errs = append(errs, fmt.Errorf("links: no link %q (want region names in Regions order, like %q)", name, LinkName(o.Regions[0], o.Regions[len(o.Regions)-1])))
		}
		if p != nil {
			if err := p.Validate(); err != nil {
				errs = append(errs, fmt.Errorf("links[%s]: %w", name, err))
			}
		}
	}
	if o.Profile != nil {
		if err := o.Profile.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("profile: %w", err))
		}
	}
	if o.NamePrefix != "" && !regionName.MatchString(o.NamePrefix) {
		errs = append(errs, fmt.Errorf("name prefix %q: want lower-case letters, digits and '-'", o.NamePrefix))
	}
	return errors.Join(errs...)
}

// splitmix spreads consecutive seeds apart (SplitMix64's finaliser).
func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// setupRegions creates every region's namespace.
func (l *Lab) setupRegions(named bool, prefix string) (err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.regions {
		r.mtu = l.deviceMTULocked(r)
		r.ns, err = newNamespace(func() error { return l.setupRegionLocked(r) })
		if err != nil {
			return fmt.Errorf("region %s: %w", r.name, err)
		}
		if named {
			if r.named, err = bindNamed(r.ns, prefix+r.name); err != nil {
				return fmt.Errorf("region %s: %w", r.name, err)
			}
		}
	}
	return nil
}

// setupRegionLocked runs on a thread inside r's new namespace: it creates the
// TUN device and the netlink handle, brings up loopback and the device,
// and adds the address and a route to every other region.
func (l *Lab) setupRegionLocked(r *region) (err error) {
	if r.tun, err = openTUN(tunName); err != nil {
		return err
	}
	if r.nl, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	lo, err := r.nl.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	if err := r.nl.LinkSetUp(lo); err != nil {
		return fmt.Errorf("loopback up: %w", err)
	}
	if r.link, err = r.nl.LinkByName(tunName); err != nil {
		return fmt.Errorf("tun %s: %w", tunName, err)
	}
	// IPv4 only: no IPv6 link-local address, so the kernel sends no router
	// solicitations or MLD reports into the pump. Best effort: the pump
	// counts anything that is not IPv4 to a lab region as unroutable.
	_ = r.nl.LinkSetIP6AddrGenMode(r.link, 1) // IN6_ADDR_GEN_MODE_NONE
	_ = os.WriteFile("/proc/sys/net/ipv6/conf/"+tunName+"/disable_ipv6", []byte("1"), 0)
	if err := r.nl.LinkSetTxQLen(r.link, 1000); err != nil {
		return fmt.Errorf("tun %s txqueuelen: %w", tunName, err)
	}
	if err := r.nl.LinkSetMTU(r.link, r.mtu); err != nil {
		return fmt.Errorf("tun %s mtu %d: %w", tunName, r.mtu, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: r.addr.AsSlice(), Mask: net.CIDRMask(r.prefix.Bits(), 32)}}
	if err := r.nl.AddrAdd(r.link, addr); err != nil {
		return fmt.Errorf("address %s: %w", r.addr, err)
	}
	if err := r.nl.LinkSetUp(r.link); err != nil {
		return fmt.Errorf("tun %s up: %w", tunName, err)
	}
	for _, o := range l.regions {
		if o == r {
			continue
		}
		if err := r.nl.RouteReplace(l.routeLocked(r, o)); err != nil {
			return fmt.Errorf("route to %s (%s): %w", o.name, o.prefix, err)
		}
	}
	return nil
}

// routeLocked is r's route to region o: through the TUN device, with the
// MTU of the link direction r -> o as the path MTU.
func (l *Lab) routeLocked(r, o *region) *netlink.Route {
	dst := &net.IPNet{IP: o.prefix.Addr().AsSlice(), Mask: net.CIDRMask(o.prefix.Bits(), 32)}
	return &netlink.Route{
		LinkIndex: r.link.Attrs().Index,
		Dst:       dst,
		Scope:     netlink.SCOPE_LINK,
		MTU:       l.pathMTULocked(r, o),
	}
}

// pathMTULocked is the MTU of the link direction from r to o.
func (l *Lab) pathMTULocked(r, o *region) int {
	lk := l.linkBetween(r, o)
	dir := chaos.Up
	if lk.a != r {
		dir = chaos.Down
	}
	return profileMTU(lk.profile, dir)
}

// deviceMTULocked is the MTU of r's TUN device: the largest path MTU out
// of it, so that each route's MTU fits the device.
func (l *Lab) deviceMTULocked(r *region) int {
	mtu := 0
	for _, o := range l.regions {
		if o != r {
			mtu = max(mtu, l.pathMTULocked(r, o))
		}
	}
	return mtu
}

func profileMTU(p *chaos.Profile, dir chaos.Dir) int {
	if p == nil || p.Params(dir).MTU == 0 {
		return profile.DefaultMTU
	}
	return p.Params(dir).MTU
}

// applyMTULocked brings r's device and route MTUs in line with the link
// profiles, growing the device before the routes and shrinking it after.
func (l *Lab) applyMTULocked(r *region) error {
	want := l.deviceMTULocked(r)
	grow := want > r.mtu
	if grow {
		if err := r.nl.LinkSetMTU(r.link, want); err != nil {
			return fmt.Errorf("region %s: mtu %d: %w", r.name, want, err)
		}
	}
	for _, o := range l.regions {
		if o != r {
			if err := r.nl.RouteReplace(l.routeLocked(r, o)); err != nil {
				return fmt.Errorf("region %s: route to %s: %w", r.name, o.name, err)
			}
		}
	}
	if !grow && want != r.mtu {
		if err := r.nl.LinkSetMTU(r.link, want); err != nil {
			return fmt.Errorf("region %s: mtu %d: %w", r.name, want, err)
		}
	}
	r.mtu = want
	return nil
}

func (l *Lab) linkBetween(r, o *region) *Link {
	for _, lk := range l.links {
		if lk.a == r && lk.b == o || lk.a == o && lk.b == r {
			return lk
		}
	}
	panic("netlab: no link between " + r.name + " and " + o.name)
}

// sendTUN writes one IP packet into the destination region's TUN device,
// which hands it to that namespace's IP stack.
func sendTUN(dst *region, b []byte) error {
	_, err := dst.tun.Write(b)
	return err
}

// Seed is the seed of the impairments.
func (l *Lab) Seed() uint64 { return l.seed }

// Regions lists the region names in order.
func (l *Lab) Regions() []string {
	names := make([]string, len(l.regions))
	for i, r := range l.regions {
		names[i] = r.name
	}
	return names
}

// Addr is the region's address (198.18.<i+1>.1), or the zero Addr for an
// unknown region.
func (l *Lab) Addr(region string) netip.Addr {
	if r := l.byName[region]; r != nil {
		return r.addr
	}
	return netip.Addr{}
}

// Link returns the link between regions a and b, in either order, or nil
// if there is none.
func (l *Lab) Link(a, b string) *Link {
	ra, rb := l.byName[a], l.byName[b]
	if ra == nil || rb == nil || ra == rb {
		return nil
	}
	return l.linkBetween(ra, rb)
}

// Links lists the links: for each pair of regions in order, A before B.
func (l *Lab) Links() []*Link { return append([]*Link(nil), l.links...) }

// NamedNamespace is the name for `ip netns exec` of the region's namespace,
// or "" if the lab was not built with Options.Named.
func (l *Lab) NamedNamespace(region string) string {
	if r := l.byName[region]; r != nil && r.named != "" {
		return r.named[len(namedDir)+1:]
	}
	return ""
}

// NamespacePath is a path to the region's namespace that nsenter --net
// accepts: the bind mount of a named namespace, or else this process's
// file descriptor for it (valid while the lab is open).
func (l *Lab) NamespacePath(region string) string {
	r := l.byName[region]
	if r == nil || r.ns == nil {
		return ""
	}
	if r.named != "" {
		return r.named
	}
	return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), r.ns.Fd())
}

// Close stops the pump, removes the TUN devices (and with them the routes
// and addresses), unmounts named namespaces and releases the namespaces,
// which the kernel then deletes once no socket or process of the caller's
// still lives in them. It returns once every goroutine of the lab has
// finished. Packets still in flight are discarded. It may be called more
// than once; later calls wait for the first and return its result.
func (l *Lab) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		l.mu.Unlock()

		var errs []error
		close(l.quit)
		for _, r := range l.regions {
			if r.tun != nil {
				errs = append(errs, r.tun.Close())
			}
		}
		l.wg.Wait()
		for _, r := range l.regions {
			if r.nl != nil {
				r.nl.Close()
			}
			if r.named != "" {
				errs = append(errs, unbindNamed(r.named))
			}
			if r.ns != nil {
				errs = append(errs, r.ns.Close())
			}
		}
		l.closeErr = errors.Join(errs...)
		l.log.Info("lab closed", "err", l.closeErr)
	})
	return l.closeErr
}

// Name is the link's name, "a--b".
func (lk *Link) Name() string { return lk.name }

// Regions returns the link's regions: a sends on Up, b on Down.
func (lk *Link) Regions() (a, b string) { return lk.a.name, lk.b.name }

// Profile is the profile in force (nil = a perfect link).
func (lk *Link) Profile() *chaos.Profile {
	lk.lab.mu.Lock()
	defer lk.lab.mu.Unlock()
	return lk.profile
}

// SetProfile changes the emulated link from now on (nil = a perfect link).
// Packets already scheduled keep their delivery times; scheduled events
// keep their timing from the lab's start. A new MTU also changes the path
// MTU of the routes between the two regions.
func (lk *Link) SetProfile(p *chaos.Profile) error {
	if p != nil {
		if err := p.Validate(); err != nil {
			return fmt.Errorf("link %s: set profile: %w", lk.name, err)
		}
		p = p.Clone()
	}
	l := lk.lab
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return fmt.Errorf("link %s: set profile: %w", lk.name, net.ErrClosed)
	}
	if err := lk.up.Impairment().SetProfile(p); err != nil {
		return fmt.Errorf("link %s: set profile: %w", lk.name, err)
	}
	if err := lk.down.Impairment().SetProfile(p); err != nil {
		return fmt.Errorf("link %s: set profile: %w", lk.name, err)
	}
	lk.profile = p
	err := errors.Join(l.applyMTULocked(lk.a), l.applyMTULocked(lk.b))
	l.log.Info("lab link profile changed", "link", lk.name, "profile", p.String(), "err", err)
	if err != nil {
		return fmt.Errorf("link %s: set profile: %w", lk.name, err)
	}
	return nil
}

// SetBlackout starts (true) or ends (false) a blackout of both directions:
// while it lasts nothing crosses the link either way, including packets
// that were already in flight. Ending it also ends a Blackout(d) in
// progress; blackouts scheduled by the profile still happen.
func (lk *Link) SetBlackout(on bool) {
	lk.up.Impairment().SetBlackout(on)
	lk.down.Impairment().SetBlackout(on)
	lk.lab.log.Info("lab link blackout", "link", lk.name, "on", on)
}

// Blackout blacks out both directions for d, from now, and returns at once.
func (lk *Link) Blackout(d time.Duration) {
	if d <= 0 {
		return
	}
	until := time.Now().Add(d)
	lk.up.Impairment().BlackoutUntil(until)
	lk.down.Impairment().BlackoutUntil(until)
	lk.lab.log.Info("lab link blackout", "link", lk.name, "for", d)
}

// Stats returns a snapshot of the link's counters.
func (lk *Link) Stats() LinkStats {
	return LinkStats{Link: lk.name, Up: lk.up.Stats(), Down: lk.down.Stats()}
}

// LinkStats counts one link. Bytes count whole IP packets.
type LinkStats struct {
	Link string         `json:"link"`
	Up   chaos.DirStats `json:"up"`   // A -> B
	Down chaos.DirStats `json:"down"` // B -> A
}

// RegionStats counts what the pump read from one region's TUN device.
type RegionStats struct {
	Region     string `json:"region"`
	Addr       string `json:"addr"`
	Read       uint64 `json:"read"`       // packets read from the TUN device
	Unroutable uint64 `json:"unroutable"` // not IPv4, or not to another region
	ReadErrors uint64 `json:"read_errors"`
}

// Stats is a snapshot of a lab's counters.
type Stats struct {
	Links   []LinkStats   `json:"links"`
	Regions []RegionStats `json:"regions"`
}

// Stats returns a snapshot of every link's and region's counters.
func (l *Lab) Stats() Stats {
	var s Stats
	for _, lk := range l.links {
		s.Links = append(s.Links, lk.Stats())
	}
	for _, r := range l.regions {
		s.Regions = append(s.Regions, RegionStats{Region: r.name, Addr: r.addr.String(),
			Read: r.read.Load(), Unroutable: r.unroutable.Load(), ReadErrors: r.readErrs.Load()})
	}
	return s
}
