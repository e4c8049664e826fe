package amqp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	goamqp "github.com/Azure/go-amqp"

	"github.com/meridian-gw/meridian/transport"
)

// Broker says how to reach the AMQP 1.0 broker that carries a link.
type Broker struct {
	// URL is amqp://host:port or amqps://host:port. User and password in
	// the URL are SASL PLAIN credentials unless SASL is set.
	URL string
	// SASL selects the mechanism: "" (PLAIN if the URL or Username has
	// credentials, else none), "plain", "anonymous" or "external".
	SASL     string
	Username string
	Password string
	// TLS, if not nil, is used for amqps (nil: the system roots and the
	// URL's host name).
	TLS *tls.Config
}

func (b Broker) connOptions() (*goamqp.ConnOptions, error) {
	u, err := url.Parse(b.URL)
	if err != nil {
		return nil, fmt.Errorf("broker url: %w", err)
	}
	if u.Scheme != "amqp" && u.Scheme != "amqps" {
		return nil, fmt.Errorf("broker url %q: scheme must be amqp or amqps", redactURL(b.URL))
	}
	o := &goamqp.ConnOptions{TLSConfig: b.TLS, ContainerID: "", IdleTimeout: 30 * time.Second}
	user, pass := b.Username, b.Password
	if u.User != nil && user == "" {
		user = u.User.Username()
		pass, _ = u.User.Password()
	}
	switch b.SASL {
	case "", "plain":
		if user != "" || b.SASL == "plain" {
			o.SASLType = goamqp.SASLTypePlain(user, pass)
		}
	case "anonymous":
		o.SASLType = goamqp.SASLTypeAnonymous()
	case "external":
		o.SASLType = goamqp.SASLTypeExternal("")
	default:
		return nil, fmt.Errorf("sasl mechanism %q: want plain, anonymous or external", b.SASL)
	}
	return o, nil
}

// addr is the URL without credentials, for go-amqp's Dial (credentials go
// through SASLType) and for messages.
func (b Broker) addr() string { return redactURL(b.URL) }

// redactURL drops the user information of a URL.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable url)"
	}
	u.User = nil
	return u.String()
}

// Addresses names the two broker addresses of one direction of a link: the
// data address carries what the sending gateway sends (Hello, Batch, Topic,
// Groups, ...), the control address what the receiving gateway answers
// (Welcome, Resume, Ack, Credit, ...).
type Addresses struct {
	Data, Control string
}

// AddressesFor returns the addresses of the direction from gateway from to
// gateway to of link: prefix + link + "." + from + "." + to, and the same
// with ".ctl" for the control address. With RabbitMQ the prefix is
// typically "/queue/meridian." (one queue per address, declared by the
// broker on first use).
func AddressesFor(prefix, link, from, to string) Addresses {
	data := prefix + link + "." + from + "." + to
	return Addresses{Data: data, Control: data + ".ctl"}
}

// DefaultAddressPrefix is the address prefix of links whose topology sets
// none: RabbitMQ queues named meridian.LINK.FROM.TO[.ctl].
const DefaultAddressPrefix = "/queue/meridian."

// Timing holds a session's timings; zero fields take the defaults.
type Timing struct {
	// KeepAlive is how often a side sends a Ping when it has sent nothing
	// else. Zero: 2 s.
	KeepAlive time.Duration
	// IdleTimeout ends a session from which nothing arrived for this long.
	// Zero: 20 s.
	IdleTimeout time.Duration
	// Handshake bounds the wait for a Welcome. Zero: 30 s.
	Handshake time.Duration
	// CloseTimeout bounds every close of an AMQP link, session or
	// connection (RabbitMQ 3.10's detach can leave go-amqp's Close
	// blocked until its context ends). Zero: 2 s.
	CloseTimeout time.Duration
}

func (t Timing) withDefaults() Timing {
	if t.KeepAlive <= 0 {
		t.KeepAlive = 2 * time.Second
	}
	if t.IdleTimeout <= 0 {
		t.IdleTimeout = 20 * time.Second
	}
	if t.Handshake <= 0 {
		t.Handshake = 30 * time.Second
	}
	if t.CloseTimeout <= 0 {
		t.CloseTimeout = 2 * time.Second
	}
	return t
}

// DialerOptions configure a Dialer.
type DialerOptions struct {
	Broker Broker
	// Addresses of the direction this dialer sends on. Required.
	Addresses Addresses
	// Codec compresses batches (zero value: CodecNone; the gateway passes
	// the link's).
	Codec transport.Codec
	// Limits bound what the dialer decodes (zero: defaults).
	Limits transport.Limits
	// MaxInFlight bounds the messages sent and not yet accepted by the
	// broker. Zero: 64.
	MaxInFlight int
	// Credit is the AMQP link credit of the control receiver. Zero: 256.
	Credit int
	Timing Timing
	// Logger; nil discards.
	Logger *slog.Logger
}

// ListenerOptions configure a Listener.
type ListenerOptions struct {
	Broker Broker
	// Peers are the directions this listener receives: for each, the
	// gateway that sends on it (Hello.Gateway must name it) and its
	// addresses. At least one.
	Peers []Peer
	// Accept decides each session. Required.
	Accept transport.Accept
	// Codec compresses what the listener sends (it sends no batches; the
	// zero value is right).
	Codec transport.Codec
	// Limits bound what the listener decodes; MaxBatchBytes is replaced by
	// each session's Welcome.MaxBatchBytes.
	Limits transport.Limits
	// Credit is the AMQP link credit of each data receiver: the most
	// messages the listener holds unsettled (received, not yet committed
	// and acknowledged) per address. Zero: 256.
	Credit int
	Timing Timing
	// Logger; nil discards.
	Logger *slog.Logger
}

// Peer is one direction a Listener receives.
type Peer struct {
	Gateway   string
	Addresses Addresses
}

func (o *DialerOptions) check() error {
	if o.Broker.URL == "" {
		return errors.New("amqp dialer: no broker url")
	}
	if o.Addresses.Data == "" || o.Addresses.Control == "" {
		return errors.New("amqp dialer: no addresses")
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 64
	}
	if o.Credit <= 0 {
		o.Credit = 256
	}
	o.Timing = o.Timing.withDefaults()
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	_, err := o.Broker.connOptions()
	return err
}

func (o *ListenerOptions) check() error {
	if o.Broker.URL == "" {
		return errors.New("amqp listener: no broker url")
	}
	if len(o.Peers) == 0 {
		return errors.New("amqp listener: no peers")
	}
	if o.Accept == nil {
		return errors.New("amqp listener: no accept func")
	}
	if o.Credit <= 0 {
		o.Credit = 256
	}
	o.Timing = o.Timing.withDefaults()
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	_, err := o.Broker.connOptions()
	return err
}

// Dial connects to the broker, credentials through SASL (never in the
// address). The AMQP endpoints (a cluster of kind amqp, package
// mirror/amqpsource) use it to reach a broker's own addresses with the
// same URL, SASL and TLS handling as links.
func (b Broker) Dial(ctx context.Context) (*goamqp.Conn, error) {
	co, err := b.connOptions()
	if err != nil {
		return nil, err
	}
	ac, err := goamqp.Dial(ctx, b.addr(), co)
	if err != nil {
		return nil, fmt.Errorf("dial amqp broker %s: %w", b.addr(), err)
	}
	return ac, nil
}
