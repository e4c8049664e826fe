package quic

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"

	quicgo "github.com/quic-go/quic-go"
)

// maxMigrations caps Migrate calls per session: quic-go cannot take a
// connection off a socket it has used, so every socket a session has
// migrated away from stays open (and is closed with the session).
const maxMigrations = 16

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
// error says why; pc is then kept until the session ends. Only the dialing
// side can migrate, and at most maxMigrations times per session.
func (c *Conn) Migrate(ctx context.Context, pc net.PacketConn) error {
	if c.dial == nil {
		return errors.New("migrate: only the dialing side of a session can migrate")
	}
	if pc == nil {
		return errors.New("migrate: nil socket")
	}
	ds := c.dial
	ds.migrateMu.Lock()
	defer ds.migrateMu.Unlock()
	if err := c.Err(); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if ds.migrations >= maxMigrations {
		return fmt.Errorf("migrate: the session has migrated %d times, the most it may; redial instead", ds.migrations)
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
