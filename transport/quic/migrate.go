package quic

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	quicgo "github.com/quic-go/quic-go"
)

// maxMigrations caps Migrate calls per session: quic-go cannot take a
// connection off a socket it has used, so every socket a session has
// migrated away from stays open (and is closed with the session).
const maxMigrations = 16

// errMigrationLimit: a session has migrated maxMigrations times.
var errMigrationLimit = errors.New("migration limit reached")

// Migrate moves a dialer's session, every stripe of it, onto a new local
// UDP socket pc, for example when the gateway's address changed (a vessel
// switching from satellite to a harbour network, a vehicle changing mobile
// cell). The session takes ownership of pc. Streams carry on: nothing sent
// is lost or reordered, and the peer (which sees a new address and
// validates it) keeps the session.
//
// For each stripe, Migrate probes the new path (QUIC PATH_CHALLENGE, one
// round trip) and, when every stripe's probe has been answered, switches
// all of them to it. If a probe fails (ctx ends, or the path does not work)
// nothing is switched, the session stays on its current socket and the
// error says why; pc is then kept until the session ends (and closed at
// once if Migrate refuses before probing). Only the dialing
// side can migrate, and at most maxMigrations times per session.
func (c *Conn) Migrate(ctx context.Context, pc net.PacketConn) error {
	if pc == nil {
		return errors.New("migrate: nil socket")
	}
	if c.dial == nil {
		pc.Close()
		return errors.New("migrate: only the dialing side of a session can migrate")
	}
	ds := c.dial
	ds.migrateMu.Lock()
	defer ds.migrateMu.Unlock()
	if err := c.Err(); err != nil {
		pc.Close()
		return fmt.Errorf("migrate: %w", err)
	}
	if ds.migrations >= maxMigrations {
		pc.Close()
		return fmt.Errorf("migrate: %w: the session has migrated %d times; redial instead", errMigrationLimit, ds.migrations)
	}
	// No stripe joins on the old socket meanwhile.
	ds.mu.Lock()
	defer ds.mu.Unlock()
	ds.migrations++
	tr := &quicgo.Transport{Conn: pc}
	// From the first probe on, connections are registered with tr: it must
	// outlive them, whatever happens.
	ds.old = append(ds.old, tr)
	ds.oldPC = append(ds.oldPC, pc)

	c.lanesMu.Lock()
	stripes := slices.Clone(c.stripes)
	c.lanesMu.Unlock()
	// A probe does not notice its connection closing: end it with the
	// session.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(c.ctx, cancel)()
	paths := make([]*quicgo.Path, len(stripes))
	errs := make([]error, len(stripes))
	var wg sync.WaitGroup
	for i, st := range stripes {
		p, err := st.qc.AddPath(tr)
		if err != nil {
			errs[i] = fmt.Errorf("stripe %d: add path: %w", st.idx, err)
			continue
		}
		paths[i] = p
		wg.Go(func() {
			if err := p.Probe(ctx); err != nil {
				errs[i] = fmt.Errorf("stripe %d: probe %s: %w", st.idx, pc.LocalAddr(), err)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, p := range paths {
			if p != nil {
				p.Close()
			}
		}
		return fmt.Errorf("migrate: %w", err)
	}
	for i, p := range paths {
		if err := p.Switch(); err != nil {
			errs[i] = fmt.Errorf("stripe %d: switch: %w", stripes[i].idx, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	// The new socket is now the session's: stripes join on it.
	ds.old[len(ds.old)-1], ds.oldPC[len(ds.oldPC)-1] = ds.tr, ds.pc
	ds.tr, ds.pc = tr, pc
	local := pc.LocalAddr()
	ds.local.Store(&local)
	c.cfg.log.Info("session migrated", "local", pc.LocalAddr().String(), "stripes", len(stripes))
	return nil
}

// pathWatch is how a dialer's sessions notice that the local address they
// should send from has changed (see DialerOptions.LocalAddrFor).
type pathWatch struct {
	every    time.Duration // 0: off
	source   func(raddr *net.UDPAddr) (netip.Addr, error)
	listenAt func(ip netip.Addr) (net.PacketConn, error)
}

func newPathWatch(opts DialerOptions) pathWatch {
	w := pathWatch{every: opts.PathCheck, source: opts.LocalAddrFor, listenAt: opts.ListenPacketAt}
	if w.every == 0 {
		w.every = time.Second
	}
	if w.source == nil && (opts.ListenPacket == nil || opts.ListenPacketAt != nil) {
		w.source = routeSource
	}
	if w.listenAt == nil {
		w.listenAt = func(ip netip.Addr) (net.PacketConn, error) {
			return net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
		}
	}
	if w.source == nil || w.every < 0 {
		w.every = 0
	}
	return w
}

// routeSource is the kernel's preferred source address towards raddr: the
// local address of a UDP socket connected to it (connecting sends nothing).
func routeSource(raddr *net.UDPAddr) (netip.Addr, error) {
	c, err := net.DialUDP("udp", nil, raddr)
	if err != nil {
		return netip.Addr{}, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap(), nil
}

// pathRetry is how long the path watcher waits after a failed migration
// before trying the same new address again.
const pathRetry = 5 * time.Second

// watchPath migrates the session when the local address towards the peer
// changes, until the session ends or has migrated maxMigrations times.
func (c *Conn) watchPath() {
	defer c.wg.Done()
	ds := c.dial
	t := time.NewTicker(ds.path.every)
	defer t.Stop()
	var failedAt time.Time
	var failed netip.Addr
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		src, err := ds.path.source(ds.raddr)
		if err != nil || !src.IsValid() || src == ds.source {
			continue // no route just now (an interface going down): wait
		}
		if src == failed && time.Since(failedAt) < pathRetry {
			continue
		}
		log := c.cfg.log.With("from", ds.source, "to", src)
		pc, err := ds.path.listenAt(src)
		if err != nil {
			log.Warn("local address changed; cannot open a socket on the new one", "err", err)
			failed, failedAt = src, time.Now()
			continue
		}
		ctx, cancel := context.WithTimeout(c.ctx, c.cfg.handshakeTimeout)
		err = c.Migrate(ctx, pc)
		cancel()
		switch {
		case err == nil:
			log.Info("local address changed; session migrated")
			ds.source = src
		case errors.Is(err, errMigrationLimit):
			log.Warn("local address changed; not migrating again", "err", err)
			return
		default:
			if c.ctx.Err() != nil {
				return
			}
			log.Warn("local address changed; migration failed, will retry", "err", err, "retry_in", pathRetry)
			failed, failedAt = src, time.Now()
		}
	}
}
