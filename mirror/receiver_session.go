package mirror

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"

	"github.com/meridian-gw/meridian/transport"
)

// serveSession handles one accepted session until it ends.
func (e *Engine) serveSession(ctx context.Context, conn transport.Conn) {
	h := conn.Hello()
	w := conn.Welcome()
	sess := &inSession{conn: conn, peer: h.Gateway, win: newRecvWindow(w.Window, w.MaxBatchBytes)}
	log := e.log.With("peer", h.Gateway, "addr", conn.RemoteAddr())
	e.m.sessions.WithLabelValues(h.Gateway, "receiver").Inc()
	defer e.m.sessions.WithLabelValues(h.Gateway, "receiver").Dec()
	log.Info("link session accepted", "legs", h.Legs)
	// Accept authorized the Hello; a session that reaches here without it
	// (a listener that skipped Accept) is refused all the same.
	if terr := e.authorize(h); terr != nil {
		conn.Close(terr)
		return
	}
	// A session whose Hello came as 0-RTT data (which an attacker can
	// replay, and a sender's hedged redials after an outage all send) takes
	// only the legs nobody holds, at once: the Resume then leaves before
	// the handshake completes. It never displaces a live session, even
	// once confirmed (a losing redial completes its handshake as it is
	// closed); it waits as a candidate and gets the leg when the holder
	// ends. The legs are found and attached under inMu, so that ApplyIn
	// never removes a leg a session is attaching to.
	tconn, canBeTentative := conn.(transport.Tentative)
	tentative := canBeTentative && tconn.Tentative()
	var legs []*inLeg
	owned := map[string]*inLeg{} // the legs of the session's Hello: no frame may name another
	e.inMu.RLock()
	for _, id := range h.Legs {
		if l := e.in[id]; l != nil && owned[id] == nil {
			legs = append(legs, l)
			owned[id] = l
			if slices.Contains(h.Shared, id) {
				// A sharer (share.go): it claims partitions before it
				// gets a Resume.
				l.state.share(sess)
				continue
			}
			l.state.attach(sess, tentative)
		}
	}
	e.inMu.RUnlock()
	violation := func(reason, msg string) {
		e.violation(conn, log, offender(h), reason, errors.New(msg))
	}
	foreign := func(kind, leg string) {
		violation("foreign_leg", kind+" for leg "+strconv.Quote(leg)+", which is not one of the session's Hello")
	}
	defer func() {
		for _, l := range legs {
			l.state.detach(sess)
		}
	}()
	// Topic frames are prepared off this loop, one goroutine per leg with
	// announcements in hand, so that creating or configuring one leg's
	// destination topic never stalls the other legs' batches. They end
	// (and are waited for) before the session's legs are detached.
	preps := &topicPreparer{conn: conn, log: log}
	pctx, stopPreps := context.WithCancel(ctx)
	defer preps.wait()
	defer stopPreps()
	stopRTT := e.trackRTT(h.Gateway, conn)
	defer stopRTT()
	for {
		f, err := conn.Recv(ctx)
		if err != nil {
			if errors.Is(err, transport.ErrMalformed) && ctx.Err() == nil {
				// Garbage from the peer (the transport has told it why).
				e.violation(conn, log, offender(h), "malformed", err)
				return
			}
			if ctx.Err() == nil && !errors.Is(err, transport.ErrClosed) {
				e.m.sessionFails.WithLabelValues(h.Gateway, "receiver").Inc()
				log.Warn("link session ended", "err", err)
			} else {
				log.Info("link session closed")
			}
			conn.Close(nil)
			return
		}
		switch f := f.(type) {
		case *transport.Batch:
			l := owned[f.Leg]
			if l == nil {
				foreign("batch", f.Leg)
				return
			}
			e.m.wireBytes.WithLabelValues(f.Leg, "in").Add(float64(f.WireSize))
			if err := l.enqueue(f, sess); err != nil {
				e.violation(conn, log, offender(h), "credit", err)
				return
			}
		case *transport.Topic:
			l := owned[f.Leg]
			if l == nil {
				foreign("topic", f.Leg)
				return
			}
			preps.add(pctx, l, f)
		case *transport.Groups:
			l := owned[f.Leg]
			if l == nil {
				foreign("groups", f.Leg)
				return
			}
			if l.groups != nil {
				l.groups.offer(f)
			}
		case *transport.Claim:
			l := owned[f.Leg]
			if l == nil {
				foreign("claim", f.Leg)
				return
			}
			res, ok := l.state.claim(sess, f, canBeTentative && tconn.Tentative())
			if !ok {
				violation("claim_unshared", "a claim for leg "+strconv.Quote(f.Leg)+", which the session's Hello does not share")
				return
			}
			l.claimed(log, sess, f, res)
		case *transport.Goaway:
			log.Info("peer is going away", "reason", f.Reason)
			conn.Close(nil)
			return
		case *transport.Error:
			log.Warn("peer reported an error", "err", f)
			conn.Close(nil)
			return
		case *transport.Resume, *transport.Ack, *transport.Credit, *transport.TopicReady, *transport.Fenced,
			*transport.Hello, *transport.Welcome:
			// Frames only a receiver sends: a sender has no business
			// sending them, and none is ever applied.
			violation("receiver_frame", "a sender sent "+transport.TypeOf(f).String()+", which only a receiver sends")
			return
		default:
			log.Debug("ignoring frame", "type", fmt.Sprintf("%T", f))
		}
	}
}

// topicPreparer prepares a session's Topic frames and answers each with a
// TopicReady: per leg in the order they came, different legs at once. While
// a leg's topic is prepared, its batches for that topic wait in the shard
// queues (see legState.take), bounded by the credit window the session
// granted: the sender gets no acks for them.
type topicPreparer struct {
	conn transport.Conn
	log  *slog.Logger
	wg   sync.WaitGroup

	mu    sync.Mutex
	queue map[*inLeg][]*transport.Topic // a leg is present while its goroutine runs
}

// add queues t for l, starting l's goroutine if none runs.
func (p *topicPreparer) add(ctx context.Context, l *inLeg, t *transport.Topic) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.queue == nil {
		p.queue = map[*inLeg][]*transport.Topic{}
	}
	q, running := p.queue[l]
	p.queue[l] = append(q, t)
	if !running {
		p.wg.Go(func() { p.run(ctx, l) })
	}
}

// run prepares l's queued topics until none is left.
func (p *topicPreparer) run(ctx context.Context, l *inLeg) {
	for {
		p.mu.Lock()
		q := p.queue[l]
		if len(q) == 0 {
			delete(p.queue, l)
			p.mu.Unlock()
			return
		}
		t := q[0]
		p.queue[l] = q[1:]
		p.mu.Unlock()
		ready := &transport.TopicReady{Leg: t.Leg, Name: t.Name}
		if err := l.prepareTopic(ctx, t); err != nil {
			ready.Err = err.Error()
			p.log.Warn("destination topic not ready", "leg", t.Leg, "topic", t.Name, "err", err)
		}
		if err := p.conn.Send(ctx, ready); err != nil {
			p.log.Debug("send topic-ready", "err", err)
		}
	}
}

// wait returns when every goroutine add started has ended.
func (p *topicPreparer) wait() { p.wg.Wait() }
