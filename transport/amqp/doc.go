// Package amqp carries Meridian link sessions through an AMQP 1.0 broker,
// for sites that may let only AMQP leave their network. It implements
// transport.Conn, transport.Dialer (Dialer) and transport.Listener
// (Listener), so the mirror engine runs over it unchanged: credit, resume,
// Gen, fencing, offset maps and group sync are the engine's, exactly as on
// QUIC. PROTOCOL.md section 10 is the binding's specification.
//
// # Addresses and messages
//
// One direction of a link (sending gateway FROM to receiving gateway TO)
// uses two broker addresses (AddressesFor): the data address
// PREFIX+LINK.FROM.TO carries what the sender sends (Hello, Topic, Batch,
// Groups, Ping, Goaway, Error), the control address PREFIX+LINK.FROM.TO.ctl
// what the receiver answers (Welcome, Resume, Ack, Credit, TopicReady,
// Fenced, Pong, Error). With RabbitMQ the prefix is "/queue/meridian."
// (DefaultAddressPrefix): a queue per address, so frames arrive in the
// order sent. Every message holds exactly one frame, encoded by package
// transport's codec (batches compressed with the link's codec), as its one
// data section; the application property meridian-session names the
// session, the subject the frame type. Dictionaries (Dict frames) are not
// used on this binding.
//
// A session is a random id chosen by the dialer with its Hello. Messages of
// other sessions are settled and dropped: they belong to a session that
// ended, and the engine resumes every new session from what the
// destination has committed, so nothing of an old session is needed. A
// listener answers the first message of a session it does not know
// (because it restarted) with Error protocol, so the sender redials at once.
//
// # Settlement and flow control
//
// The sender sends every message unsettled and counts it sent only when
// the broker's outcome is accepted; any other outcome ends the session
// (the order of the session would break). At most
// DialerOptions.MaxInFlight messages wait for their outcome, and go-amqp
// sends only with link credit from the broker, so a slow or full broker
// makes Send wait: the gateway buffers nothing beyond that.
//
// The receiver holds a batch's message unsettled until the engine sends
// the Ack that lists the batch's Seq: the Ack is sent only after the
// destination transaction (records and offset map) committed, and the
// transport accepts the messages first, then forwards the Ack. Messages of
// batches the engine drops are accepted when the engine says so: a Resume
// for a leg settles the leg's batches of older Gen (and later arrivals of
// an older Gen settle on arrival), a Fenced settles the leg's batches, and
// a session that ends settles what it held. Every other message is settled
// once read. So the receiver's AMQP link credit (ListenerOptions.Credit,
// 256 messages by default) bounds the batches received and not yet
// committed, and the engine's credit window bounds their bytes: the
// sender never has more than the window unacknowledged (PROTOCOL.md
// section 6).
//
// Exactly once does not rest on the broker: a broker restart or a
// gateway restart ends the session, the sender redials (with the engine's
// backoff), and the receiver's Resume says where to continue from what is
// committed at the destination. Messages are sent non-durable for that
// reason: a message that a broker restart loses was of a session that
// ended with it.
//
// # Liveness
//
// Each side sends a Ping when it has sent nothing for Timing.KeepAlive
// (2 s) and ends a session from which nothing arrived for
// Timing.IdleTimeout (20 s). Pongs give Stats().RTT, the round trip
// through the broker. A listener keeps its broker connection for its life
// and reconnects with capped backoff (100 ms doubling to 5 s); a dialer's
// session has its own connection and ends with it.
//
// # RabbitMQ 3.10 quirks
//
// The broker of the tests is Debian's RabbitMQ 3.10 with its
// rabbitmq_amqp1_0 plugin (internal/amqptest). With go-amqp:
//
//   - A Sender's or Receiver's Close can block until its context ends
//     (go-amqp rejects RabbitMQ's detach reply), and a new link on that
//     AMQP session may then stall. So links are long-lived, each on an
//     AMQP session of its own, never closed one by one: a session ends by
//     closing its whole AMQP connection (a dialer's) and a listener's links
//     live as long as its connection; every close runs under
//     Timing.CloseTimeout (2 s) and is abandoned after it.
//   - The modified outcome is refused and ends the AMQP session: this
//     package never sends it, only accepted (nor released, which would not
//     raise the delivery count either).
//   - DrainCredit delivers nothing: credit is never drained, only granted
//     as messages are settled.
//   - Not RabbitMQ's but go-amqp's: its automatic credit grants again only
//     once the messages settled since its last grant reach the credit
//     left. With batches held until their Ack and settled in groups, the
//     credit left shrank until a link stalled holding a few batches, none
//     settled (seen after 363 batches of 64 KiB acknowledged 16 at a
//     time). A listener's data receivers therefore grant credit by hand
//     as a window (creditWindow): credit left plus messages held never
//     exceed ListenerOptions.Credit, and each settled message returns its
//     credit, in chunks of a quarter of the window or at once when little
//     is left.
//   - Credit goes astray: with messages ready in the queue, a consumer
//     attached and 192 of 256 credits granted by the receiver, RabbitMQ
//     delivers nothing more (seen about once in 10,000-30,000 batches of
//     64 KiB in `meridian bench amqp`; rabbitmqctl list_queues showed the
//     messages ready, none unacknowledged). go-amqp's automatic credit
//     stalls the same way (a plain loop stopped after about 7,300 of
//     10,000 messages), so the dialer's control receiver grants credit by
//     hand too. A listener's data receiver that hears nothing for twice
//     Timing.KeepAlive while a session of that peer is live (its peer
//     pings every KeepAlive) sends a flow frame again (one credit more),
//     which RabbitMQ honours: delivery resumes about 4 s after the stall
//     instead of never (the listener's link outlives sessions, so before
//     this fix every later session of that peer idled out too). An
//     idle-timeout error names both sides' credit and messages held or
//     awaiting their outcome.
//   - A memory alarm (vm_memory_high_watermark reached) does not block
//     AMQP 1.0 publishers: 500 batches of 4 KiB were accepted under an
//     active alarm. Only the outcomes and link credit hold a sender back,
//     so this package bounds what waits for an outcome (MaxInFlight) and
//     does not rely on the broker's own flow control.
//   - A stopped broker ends links with amqp:internal-error "shutdown";
//     both sides end their sessions with that error.
//
// # Why go-amqp
//
// github.com/Azure/go-amqp is the maintained pure-Go AMQP 1.0 client
// (Microsoft's, used by the Azure SDKs against Service Bus and Event Hubs,
// and tested against Qpid and RabbitMQ): link credit, unsettled sends with
// receipts (SendWithReceipt, so sends pipeline while outcomes are checked
// in order), explicit dispositions, SASL PLAIN/ANONYMOUS/EXTERNAL and TLS,
// no cgo. Qpid Proton's Go binding needs the C library; the other pure-Go
// AMQP clients speak 0-9-1, not 1.0.
package amqp
