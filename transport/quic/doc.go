// Package quic implements Meridian links (transport.Dialer, transport.Listener,
// transport.Conn) over QUIC with mutual TLS, using quic-go.
//
// # Why quic-go
//
// quic-go is the only maintained pure-Go QUIC implementation, so gateways stay
// one static binary without cgo. It brings what links on thin, lossy networks
// need: independent streams (a lost packet stalls one partition's lane, not
// the link), TLS 1.3 built in, connection migration for gateways whose
// address changes (vessels, vehicles), 0-RTT resumption and unreliable
// datagrams (RFC 9221) for later use. Its congestion control is NewReno and
// not pluggable, which caps one connection on long lossy paths; striping over
// several connections is the remedy (see ARCHITECTURE.md).
//
// Batches are compressed by package transport with klauspost/compress: the
// fastest pure-Go zstd and s2 (a Snappy successor), allocation-free when
// encoders and decoders are reused, as the transport does.
//
// # Session
//
// The dialer (the sending gateway) opens a QUIC connection with ALPN
// "meridian/1"; both sides present certificates of the deployment CA
// (internal/pki). It opens one bidirectional control stream and sends Hello.
// The listener agrees a protocol version, checks that Hello.Gateway is the
// name in the client certificate, asks the Accept callback, and answers
// Welcome or Error. All frames other than batches then travel in order on
// the control stream, in both directions. See ../PROTOCOL.md.
//
// # Lanes
//
// Batches travel on lanes: unidirectional streams, each starting with a kind
// byte (0x01). A batch's lane is FNV-1a(leg, topic, partition) mod Lanes, so
// one partition's batches stay in order on one stream while partitions on
// other lanes proceed independently: a retransmission on one lane does not
// block the others (no head-of-line blocking across lanes), and lanes are
// encoded and decoded in parallel. The dialer opens its Lanes streams at once;
// the listener opens its own only if it ever sends a batch.
//
// Each outgoing stream has a sender: Send encodes the frame in the caller's
// goroutine (compression included) and queues the bytes; one writer goroutine
// per stream writes them. Queues are short, so a slow peer pushes back through
// QUIC flow control to Send. Each incoming stream has a reader goroutine that
// decodes frames into Recv's queues, which are also short: a slow Recv holds
// back the peer.
//
// # Liveness
//
// QUIC keep-alives (KeepAlivePeriod) keep a quiet session open; a peer silent
// for MaxIdleTimeout ends it with an error saying so. Ping/Pong on the control
// stream measure RTT at the application level (Stats().RTT prefers QUIC's own
// smoothed RTT).
//
// # Ending
//
// Close sends an Error frame (for a *transport.Error) or a Goaway, and closes
// the QUIC connection with the same application error code (0 for a graceful
// close) and message, so the peer learns why even if the frame is lost. A
// peer's graceful close ends the session with an error wrapping
// transport.ErrClosed; a peer's error with one wrapping *transport.Error.
package quic
