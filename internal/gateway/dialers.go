package gateway

import (
	"context"
	"crypto/tls"
	"fmt"
	"slices"

	"github.com/meridian-gw/meridian/routing"
	"github.com/meridian-gw/meridian/topology"
	"github.com/meridian-gw/meridian/transport"
	"github.com/meridian-gw/meridian/transport/quic"
)

// peerDialer reaches one peer gateway: its link's dialer and the address
// dialled.
type peerDialer struct {
	d    transport.Dialer
	addr string
}

// dialers builds one dialer per peer gateway: each link has its own codec
// and tuning. clientTLS is nil only when the gateway sends nothing or its
// TLS failed (then dialers checks the links alone).
func (g *Gateway) dialers(clientTLS *tls.Config) (map[string]peerDialer, []error) {
	peers := map[string]peerDialer{}
	var problems []error
	// The peers this gateway dials only to relay (routing.Table.Relays)
	// get dialers like the others.
	for _, p := range slices.Concat(g.table.Out, g.table.Relays) {
		where := p.Link.Path
		if where == "" {
			where = g.table.Gateway.Path // a local link: the gateway's own
		}
		if !p.Dials {
			continue // the peer dials this gateway (links[].dial)
		}
		if p.Link.Transport != "quic" && p.Link.Transport != "amqp" {
			problems = append(problems, &SettingError{where + ".transport", fmt.Errorf("transport %q cannot be built; this gateway has quic and amqp", p.Link.Transport)})
			continue
		}
		codec, err := transport.ParseCodec(p.Link.Compression)
		if err != nil {
			problems = append(problems, &SettingError{where + ".compression", fmt.Errorf("link %s: %w", p.Link.Name, err)})
			continue
		}
		if p.Link.Transport == "amqp" {
			d, err := g.amqpDialer(p, codec)
			if err != nil {
				problems = append(problems, err)
				continue
			}
			peers[p.Gateway.Name] = peerDialer{d, ""}
			continue
		}
		sess := linkSession(p.Link, g.opts.Profile)
		sess.Codec, sess.Logger = codec, g.log.With("peer", p.Gateway.Name)
		if codec == transport.CodecZstd {
			// Per-topic dictionaries for small batches, and the level from
			// the link's rate (never its RTT): thin links get zstd better.
			_, sess.CodecLevel = transport.ChooseCompression(float64(p.Link.DataRate(linkProfile(p.Link, g.opts.Profile))), 1)
			sess.Dictionaries = true
		}
		if clientTLS == nil {
			continue
		}
		// The peer, and its standby receivers (routing.Peer.Standby),
		// each with a dialer that pins its own name.
		for _, to := range append([]*topology.Gateway{p.Gateway}, p.Standby...) {
			if _, done := peers[to.Name]; done {
				continue
			}
			s := sess
			s.Logger = g.log.With("peer", to.Name)
			d, err := quic.NewDialer(quic.DialerOptions{TLS: serverNameFor(clientTLS, to.Name), Session: s,
				ListenPacket: g.opts.DialPacket})
			if err != nil {
				problems = append(problems, &SettingError{where, fmt.Errorf("link %s: %w", p.Link.Name, err)})
				break
			}
			addr := to.Advertise
			if g.opts.PeerAddr != nil {
				addr = g.opts.PeerAddr(to.Name, addr)
			}
			peers[to.Name] = peerDialer{d, addr}
		}
	}
	return peers, problems
}

// dialPeer is an engine's mirror.Options.Dial: the peer's own dialer (of
// the engine's table), at the peer's address.
func dialPeer(ctx context.Context, table *routing.Table, peers map[string]peerDialer, peer string, h *transport.Hello) (transport.Conn, error) {
	p, ok := peers[peer]
	if !ok {
		return nil, fmt.Errorf("gateway %s has no link to peer %q", table.Gateway.Name, peer)
	}
	return p.d.Dial(ctx, p.addr, h)
}
