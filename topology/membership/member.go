package membership

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// State is what a member knows of another.
type State uint8

const (
	StateAlive State = iota
	StateSuspect
	StateDead
	StateLeft
)

func (s State) String() string {
	switch s {
	case StateAlive:
		return "alive"
	case StateSuspect:
		return "suspect"
	case StateDead:
		return "dead"
	case StateLeft:
		return "left"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// Info is one member as this member sees it.
type Info struct {
	Name  string
	Meta  Meta // zero when its metadata did not decode (BadMeta says why)
	State State
	Since time.Time // when State began
	Addr  string    // gossip address it advertises
	// Reach says how this member reaches it: "direct" (a connection of
	// its own), or "gossip" (known from other members' gossip only; a
	// probe goes through them).
	Reach   string
	RTT     time.Duration // last probe round trip; 0 = none yet
	BadMeta string
}

// Options configure a Member.
type Options struct {
	// Name is the gateway's name: the member name, unique in the fleet.
	Name string
	// Meta is what the member tells the others (Region and Gateway at
	// least). Its encoding must fit in MetaMax bytes.
	Meta Meta
	// Config carries the timings (LANConfig, WANConfig, FleetConfig); New
	// sets its Name, Transport, delegates and Logger. nil: LANConfig.
	Config *memberlist.Config
	// Transport carries gossip; nil: memberlist's UDP/TCP transport at
	// Config's bind address.
	Transport memberlist.Transport
	// Seeds are the join addresses ("NAME/ADDR", see Seeds).
	Seeds []string
	// Rejoin is how often seeds that are not alive are joined again (a
	// site whose link came back, a restarted gateway); 0 = 10s.
	Rejoin time.Duration
	// Reach, if set, says whether a peer is reached "direct" (see
	// Info.Reach); nil: every alive member counts as "direct".
	Reach func(name string) bool
	// Allow reports whether a member name belongs to the fleet (a gateway
	// of the topology); a node that Allow refuses, or whose metadata does
	// not decode or names another gateway, is never taken as a member
	// (logged and counted in Counters.Refused). nil: any name.
	Allow func(name string) bool
	// Keys are AES keys (16, 24 or 32 bytes) for memberlist's AES-GCM
	// keyring, the first the primary: for pools on plain UDP/TCP. Every
	// packet and stream is then encrypted and authenticated, and gossip
	// without a known key is dropped. nil: no encryption (QUIC gossip is
	// protected by its TLS).
	Keys [][]byte
	// Leaf stops this member from passing on the health reports it
	// receives (a gateway behind a thin link: a ship on GEO satellite):
	// the others learn them from better-connected members, and from
	// push/pull, and the thin link carries the member's own reports and
	// memberlist's probes only.
	Leaf bool
	// Logger gets one line per state change; memberlist's own log lines
	// go to it at debug level (warnings and errors at theirs). nil
	// discards.
	Logger *slog.Logger
}

// Counters are a member's event counts.
type Counters struct {
	SuspicionsRaised  int64 // this member found a member failing its probes
	SuspicionsRefuted int64 // this member refuted a suspicion about itself
	Changes           int64 // state changes of any member
	// Dropped counts gossip packets dropped as undecryptable (a wrong or
	// missing key) or with a bad checksum: never applied.
	Dropped int64
	// BadHealth counts health reports that did not decode.
	BadHealth int64
	// Refused counts alive messages about nodes that are not members:
	// not in the topology, bad metadata, or metadata naming another
	// gateway.
	Refused int64
}

// Member is this gateway's membership in one memberlist pool.
type Member struct {
	opts Options
	log  *slog.Logger
	ml   *memberlist.Memberlist
	kr   *memberlist.Keyring // nil without Keys

	queue *memberlist.TransmitLimitedQueue // health broadcasts

	mu     sync.Mutex
	meta   Meta
	infos  map[string]*Info
	health map[string]*healthEntry // by gateway, this member's own included
	seq    uint64                  // of this member's last report

	raised, refuted, changes, dropped, badHealth, refused atomic.Int64
	refusedLog                                            sync.Map // name → struct{}: log each refused name once

	stop     chan struct{}
	wg       sync.WaitGroup
	shutOnce sync.Once
	leftOnce sync.Once
}

// New creates the member and starts gossip on its transport; Join the
// seeds with Start.
func New(opts Options) (*Member, error) {
	if opts.Name == "" {
		return nil, errors.New("membership: no member name")
	}
	meta := opts.Meta
	if _, err := meta.Encode(); err != nil {
		return nil, fmt.Errorf("membership: %w", err)
	}
	lg := opts.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	lg = lg.With("component", "membership", "member", opts.Name)
	m := &Member{opts: opts, log: lg, meta: meta, infos: map[string]*Info{}, health: map[string]*healthEntry{}, stop: make(chan struct{})}
	c := opts.Config
	if c == nil {
		c = LANConfig()
	}
	c.Name = opts.Name
	kr, err := newKeyring(opts.Keys)
	if err != nil {
		return nil, fmt.Errorf("membership %s: %w", opts.Name, err)
	}
	if kr != nil {
		m.kr = kr
		c.Keyring = kr
		c.GossipVerifyIncoming, c.GossipVerifyOutgoing = true, true
	}
	if opts.Transport != nil {
		c.Transport = opts.Transport
	}
	c.Delegate = (*delegate)(m)
	c.Events = (*events)(m)
	c.Ping = (*pings)(m)
	c.Alive = (*alive)(m)
	c.Logger = log.New(&mlLog{m: m}, "", 0)
	m.queue = &memberlist.TransmitLimitedQueue{RetransmitMult: c.RetransmitMult, NumNodes: func() int { return m.numMembers() }}
	ml, err := memberlist.Create(c)
	if err != nil {
		return nil, fmt.Errorf("membership %s: %w", opts.Name, err)
	}
	m.ml = ml
	return m, nil
}

// Start joins the seeds in the background, and keeps joining those that
// are not alive every Rejoin, until Shutdown.
func (m *Member) Start() {
	every := m.opts.Rejoin
	if every <= 0 {
		every = 10 * time.Second
	}
	m.wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			m.joinMissing()
			select {
			case <-m.stop:
				return
			case <-t.C:
			}
		}
	})
}

func (m *Member) joinMissing() {
	var missing []string
	m.mu.Lock()
	for _, s := range m.opts.Seeds {
		name, _, _ := strings.Cut(s, "/")
		if in := m.infos[name]; in == nil || (in.State != StateAlive && in.State != StateSuspect && in.State != StateLeft) {
			missing = append(missing, s)
		}
	}
	m.mu.Unlock()
	if len(missing) == 0 {
		return
	}
	n, err := m.ml.Join(missing)
	m.log.Debug("join", "seeds", missing, "contacted", n, "err", err)
}

// LocalName is the member's name.
func (m *Member) LocalName() string { return m.opts.Name }

// Lock order: memberlist's locks, then Member.mu. memberlist calls the
// delegates and writes its log holding its own locks, so Member never
// calls memberlist while holding mu.

// Memberlist is the underlying pool (for user messages and broadcasts).
func (m *Member) Memberlist() *memberlist.Memberlist { return m.ml }

// Counters returns the member's counts.
func (m *Member) Counters() Counters {
	return Counters{SuspicionsRaised: m.raised.Load(), SuspicionsRefuted: m.refuted.Load(), Changes: m.changes.Load(), Dropped: m.dropped.Load(), BadHealth: m.badHealth.Load(), Refused: m.refused.Load()}
}

// Members lists every member known (itself included), sorted by name.
func (m *Member) Members() []Info {
	self := m.ml.LocalNode().Address() // before m.mu: memberlist calls us holding its locks
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Info, 0, len(m.infos)+1)
	out = append(out, Info{Name: m.opts.Name, Meta: m.meta, State: StateAlive, Addr: self, Reach: "self"})
	for _, in := range m.infos {
		i := *in
		switch {
		case i.State == StateDead || i.State == StateLeft:
			i.Reach = ""
		case m.opts.Reach == nil || m.opts.Reach(i.Name):
			i.Reach = "direct"
		default:
			i.Reach = "gossip"
		}
		out = append(out, i)
	}
	slices.SortFunc(out, func(a, b Info) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Leave is the first phase of a two-phase leave: it gossips metadata that
// says the member is leaving and waits up to timeout for it to spread,
// then leaves the pool (waiting up to timeout again), so peers see "left"
// and not "dead". The gateway then drains and calls Shutdown. An error
// says a wait timed out; the leave still spreads until Shutdown. It may be
// called more than once.
func (m *Member) Leave(timeout time.Duration) error {
	var err error
	m.leftOnce.Do(func() {
		m.mu.Lock()
		m.meta.Leaving = true
		m.mu.Unlock()
		start := time.Now()
		if uerr := m.ml.UpdateNode(timeout); uerr != nil {
			m.log.Warn("leave: announcing the leave did not reach every member in time", "err", uerr)
		}
		// memberlist's Leave waits until its leave message has been
		// retransmitted enough; on a slow pool that can take longer than
		// timeout, and the message keeps going out until Shutdown.
		err = m.ml.Leave(timeout)
		m.log.Info("left the fleet", "took", time.Since(start).Round(time.Millisecond))
	})
	return err
}

// Shutdown stops gossip and closes the transport. It returns when the
// member's own goroutines have ended (memberlist does not wait for its
// own; its transport, if a Meridian one, does). It may be called more
// than once; call Leave first to leave gracefully.
func (m *Member) Shutdown() error {
	var err error
	m.shutOnce.Do(func() {
		close(m.stop)
		m.wg.Wait()
		err = m.ml.Shutdown()
	})
	return err
}

// numMembers is the pool's size for the broadcast queue's retransmit
// count. It does not call memberlist (see the lock order).
func (m *Member) numMembers() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 1
	for _, in := range m.infos {
		if in.State == StateAlive || in.State == StateSuspect {
			n++
		}
	}
	return n
}

// setLocked changes a member's state and logs the change.
func (m *Member) setLocked(in *Info, s State, why string) {
	if in.State == s && !in.Since.IsZero() {
		return
	}
	old := in.State
	in.State, in.Since = s, time.Now()
	m.changes.Add(1)
	if old == s {
		m.log.Info("member "+s.String(), "peer", in.Name, "region", in.Meta.Region, "reason", why)
		return
	}
	m.log.Info("member "+s.String(), "peer", in.Name, "region", in.Meta.Region, "was", old.String(), "reason", why)
}

func (m *Member) infoLocked(n *memberlist.Node) *Info {
	in := m.infos[n.Name]
	if in == nil {
		in = &Info{Name: n.Name}
		m.infos[n.Name] = in
	}
	in.Addr = n.Address()
	meta, err := DecodeMeta(n.Meta)
	if err != nil {
		in.BadMeta = err.Error()
	} else {
		in.Meta, in.BadMeta = meta, ""
	}
	return in
}

type events Member

func (e *events) NotifyJoin(n *memberlist.Node) {
	m := (*Member)(e)
	if n.Name == m.opts.Name {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	in := m.infoLocked(n)
	if in.Meta.Leaving {
		m.setLocked(in, StateLeft, "joined while leaving")
		return
	}
	m.setLocked(in, StateAlive, "joined")
}

func (e *events) NotifyLeave(n *memberlist.Node) {
	m := (*Member)(e)
	if n.Name == m.opts.Name {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	in := m.infoLocked(n)
	if in.Meta.Leaving || in.State == StateLeft {
		m.setLocked(in, StateLeft, "left")
		return
	}
	m.setLocked(in, StateDead, "failed")
}

func (e *events) NotifyUpdate(n *memberlist.Node) {
	m := (*Member)(e)
	if n.Name == m.opts.Name {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	in := m.infoLocked(n)
	if in.Meta.Leaving {
		m.setLocked(in, StateLeft, "announced its leave")
	}
}

type alive Member

// NotifyAlive refuses nodes that are not gateways of the fleet.
func (a *alive) NotifyAlive(n *memberlist.Node) error {
	m := (*Member)(a)
	var why string
	meta, err := DecodeMeta(n.Meta)
	switch {
	case m.opts.Allow != nil && !m.opts.Allow(n.Name):
		why = "not a gateway of the topology"
	case err != nil:
		why = err.Error()
	case meta.Gateway != n.Name:
		why = fmt.Sprintf("its metadata names gateway %q", meta.Gateway)
	}
	if why == "" {
		return nil
	}
	m.refused.Add(1)
	if _, seen := m.refusedLog.LoadOrStore(n.Name, struct{}{}); !seen {
		m.log.Warn("member refused", "peer", n.Name, "addr", n.Address(), "reason", why)
	}
	return fmt.Errorf("member %s refused: %s", n.Name, why)
}

type pings Member

func (p *pings) AckPayload() []byte { return nil }

func (p *pings) NotifyPingComplete(other *memberlist.Node, rtt time.Duration, _ []byte) {
	m := (*Member)(p)
	m.mu.Lock()
	defer m.mu.Unlock()
	in := m.infos[other.Name]
	if in == nil {
		return
	}
	in.RTT = rtt
	if in.State == StateSuspect {
		m.setLocked(in, StateAlive, "answered a probe")
	}
}

type delegate Member

func (d *delegate) NodeMeta(limit int) []byte {
	m := (*Member)(d)
	m.mu.Lock()
	defer m.mu.Unlock()
	b := m.meta.Append(nil)
	if len(b) > limit {
		// New checked the size; a leave flag does not grow it.
		return nil
	}
	return b
}

// NotifyMsg takes a health report; a newer one than this member had is
// kept and gossiped on (memberlist does not forward user messages).
func (d *delegate) NotifyMsg(b []byte) { (*Member)(d).takeHealth(b, !d.opts.Leaf) }

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return (*Member)(d).queue.GetBroadcasts(overhead, limit)
}

// LocalState carries every health report this member holds in push/pull
// (each as a uvarint length and the report, at most stateMax bytes in
// all), so that a member that joins has them at once.
func (d *delegate) LocalState(join bool) []byte {
	m := (*Member)(d)
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []byte
	for _, e := range m.health {
		if len(out)+len(e.msg)+binary.MaxVarintLen64 > stateMax {
			break
		}
		out = binary.AppendUvarint(out, uint64(len(e.msg)))
		out = append(out, e.msg...)
	}
	return out
}

// stateMax bounds the health reports carried in one push/pull.
const stateMax = 64 << 10

func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	m := (*Member)(d)
	if len(buf) > stateMax {
		m.badHealth.Add(1)
		return
	}
	for len(buf) > 0 {
		n, k := binary.Uvarint(buf)
		if k <= 0 || n > uint64(len(buf)-k) {
			m.badHealth.Add(1)
			return
		}
		m.takeHealth(buf[k:k+int(n)], false)
		buf = buf[k+int(n):]
	}
}

// mlLog turns memberlist's log lines into slog records, and picks out the
// events memberlist has no delegate for: a suspicion this member raised,
// and one about itself that it refuted.
type mlLog struct{ m *Member }

var (
	suspectRE = regexp.MustCompile(`Suspect (\S+) has failed`)
	refuteRE  = regexp.MustCompile(`Refuting a (suspect|dead) message`)
	dropRE    = regexp.MustCompile(`(?i)decrypt packet failed|invalid checksum|no installed keys could decrypt`)
)

func (l *mlLog) Write(p []byte) (int, error) {
	line := string(bytes.TrimSpace(p))
	level := slog.LevelDebug
	switch {
	case strings.HasPrefix(line, "[ERR]"):
		level = slog.LevelError
	case strings.HasPrefix(line, "[WARN]"):
		level = slog.LevelWarn
	}
	if _, rest, ok := strings.Cut(line, "] "); ok && strings.HasPrefix(line, "[") {
		line = rest
	}
	m := l.m
	if s := suspectRE.FindStringSubmatch(line); s != nil {
		m.raised.Add(1)
		m.mu.Lock()
		if in := m.infos[s[1]]; in != nil && in.State == StateAlive {
			m.setLocked(in, StateSuspect, "failed its probes")
		}
		m.mu.Unlock()
	}
	if refuteRE.MatchString(line) {
		m.refuted.Add(1)
	}
	if dropRE.MatchString(line) {
		m.dropped.Add(1)
	}
	m.log.Log(context.Background(), level, line)
	return len(p), nil
}
