package cloudevents

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/Azure/go-amqp"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Names the bindings fix, and the headers that carry the AMQP properties
// this package maps.
const (
	// AMQPPrefix is the application-property prefix written for an
	// attribute (the binding's preferred form); AMQPPrefixColon is the older
	// form, read as well.
	AMQPPrefix      = "cloudEvents_"
	AMQPPrefixColon = "cloudEvents:"
	// KafkaPrefix is the header prefix of an attribute in Kafka binary mode.
	KafkaPrefix = "ce_"
	// ContentTypeHeader is the Kafka header of the content type.
	ContentTypeHeader = "content-type"
	// StructuredContentType is written on structured output.
	StructuredContentType = "application/cloudevents+json; charset=UTF-8"
	// HeaderMessageID and HeaderSubject carry the AMQP message-id and
	// subject properties on a Kafka record.
	HeaderMessageID = "meridian.amqp.message-id"
	HeaderSubject   = "meridian.amqp.subject"
	// DefaultKeyProperty is the key's property when Options.KeyProperty is
	// "": the CloudEvents partitioning extension.
	DefaultKeyProperty = AMQPPrefix + "partitionkey"
	// DefaultMaxBytes is Options.MaxBytes when zero: 1 MiB, Kafka's default
	// largest record batch.
	DefaultMaxBytes = 1 << 20
)

// Mode is the CloudEvents content mode of the output.
type Mode uint8

const (
	Binary     Mode = iota // attributes as properties or headers, data as the body
	Structured             // the whole event as JSON in the body
)

func (m Mode) String() string {
	switch m {
	case Binary:
		return "binary"
	case Structured:
		return "structured"
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

// ParseMode reads "binary" or "structured" ("" is binary).
func ParseMode(s string) (Mode, error) {
	switch s {
	case "", "binary":
		return Binary, nil
	case "structured":
		return Structured, nil
	}
	return 0, fmt.Errorf("unknown CloudEvents mode %q; use binary or structured", s)
}

// Options configure a Codec. The zero value works: binary mode, the key
// from cloudEvents_partitionkey when present, 1 MiB at most.
type Options struct {
	// Address is the AMQP address messages come from or go to, named in
	// every error.
	Address string
	// Mode is the content mode of what the Codec writes. Plain (non
	// CloudEvents) input is carried as it is in either mode.
	Mode Mode
	// KeyProperty is where the Kafka key comes from and goes to: a
	// CloudEvents attribute when it starts with cloudEvents_ or
	// cloudEvents:, otherwise an application property. "" =
	// DefaultKeyProperty.
	KeyProperty string
	// KeyRequired makes a message without the key property an error
	// (ErrMissingKey); false maps it to a null key.
	KeyRequired bool
	// MaxBytes is the largest body read and the largest record or message
	// written; 0 = DefaultMaxBytes.
	MaxBytes int
}

// Codec converts between AMQP messages and Kafka records. It is safe for
// concurrent use.
type Codec struct {
	o       Options
	keyAttr string // the attribute the key maps to; "" when it is a plain property
}

// New checks o and returns its Codec.
func New(o Options) (*Codec, error) {
	if o.KeyProperty == "" {
		o.KeyProperty = DefaultKeyProperty
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.MaxBytes < 0 {
		return nil, fmt.Errorf("cloudevents: MaxBytes %d is negative", o.MaxBytes)
	}
	if o.Mode != Binary && o.Mode != Structured {
		return nil, fmt.Errorf("cloudevents: unknown mode %v", o.Mode)
	}
	c := &Codec{o: o}
	if name, ok := attrName(o.KeyProperty); ok {
		if name == "" {
			return nil, fmt.Errorf("cloudevents: key property %q names no attribute", o.KeyProperty)
		}
		c.keyAttr = name
	}
	return c, nil
}

// Options returns the codec's options with defaults applied.
func (c *Codec) Options() Options { return c.o }

// Errors of input that cannot be mapped, matched with errors.Is against
// an *Error.
var (
	ErrMissingKey  = errors.New("missing key property")
	ErrUndecodable = errors.New("undecodable")
	ErrTooLarge    = errors.New("too large")
)

// Error is a message or record that cannot be mapped: where it came from
// or was going, why, and what in particular.
type Error struct {
	Address string // the AMQP address
	Reason  error  // ErrMissingKey, ErrUndecodable or ErrTooLarge
	Detail  string
}

func (e *Error) Error() string {
	return fmt.Sprintf("cloudevents: address %q: %v: %s", e.Address, e.Reason, e.Detail)
}

func (e *Error) Unwrap() error { return e.Reason }

// Condition is the AMQP error condition to reject the message with.
func (e *Error) Condition() amqp.ErrCond {
	switch e.Reason {
	case ErrTooLarge:
		return amqp.ErrCondMessageSizeExceeded
	case ErrUndecodable:
		return amqp.ErrCondDecodeError
	}
	return amqp.ErrCondInvalidField
}

// ReasonLabel is a short name of the reason for metric labels:
// missing-key, undecodable, too-large.
func (e *Error) ReasonLabel() string {
	switch e.Reason {
	case ErrMissingKey:
		return "missing-key"
	case ErrTooLarge:
		return "too-large"
	}
	return "undecodable"
}

func (c *Codec) errorf(reason error, format string, args ...any) error {
	return &Error{Address: c.o.Address, Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// attr is one CloudEvents attribute in canonical text form.
type attr struct{ name, value string }

// event is a CloudEvent whatever its mode; attrs excludes datacontenttype.
type event struct {
	attrs       []attr
	contentType string // datacontenttype; "" when absent
	data        []byte
	hasData     bool
}

func (ev *event) get(name string) (string, bool) {
	for _, a := range ev.attrs {
		if a.name == name {
			return a.value, true
		}
	}
	return "", false
}

// set adds an attribute unless the event has it already.
func (ev *event) set(name, value string) {
	if _, ok := ev.get(name); !ok {
		ev.attrs = append(ev.attrs, attr{name, value})
	}
}

// sortAttrs orders the attributes: the required ones first, the rest by
// name, so that output is deterministic.
func (ev *event) sortAttrs() {
	rank := func(n string) int {
		switch n {
		case "specversion":
			return 0
		case "id":
			return 1
		case "source":
			return 2
		case "type":
			return 3
		}
		return 4
	}
	sort.SliceStable(ev.attrs, func(i, j int) bool {
		ri, rj := rank(ev.attrs[i].name), rank(ev.attrs[j].name)
		if ri != rj {
			return ri < rj
		}
		return ev.attrs[i].name < ev.attrs[j].name
	})
}

// attrName returns the attribute a prefixed AMQP property names.
func attrName(prop string) (string, bool) {
	if s, ok := strings.CutPrefix(prop, AMQPPrefix); ok {
		return s, true
	}
	if s, ok := strings.CutPrefix(prop, AMQPPrefixColon); ok {
		return s, true
	}
	return "", false
}

// isStructured reports whether a content type is the CloudEvents JSON
// format, and whether it is the batch format (which is refused).
func isStructured(ct string) (structured, batch bool) {
	if !strings.HasPrefix(strings.ToLower(strings.TrimSpace(ct)), "application/cloudevents") {
		return false, false
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false, false
	}
	switch mt {
	case "application/cloudevents+json", "application/cloudevents":
		return true, false
	case "application/cloudevents-batch+json":
		return false, true
	}
	return false, false
}

// isJSON reports whether data of this content type is JSON ("" counts, as
// the JSON format says).
func isJSON(ct string) bool {
	if ct == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/json" || mt == "text/json" || strings.HasSuffix(mt, "+json")
}

// text is the canonical text of an AMQP simple value; binary values come
// back as their bytes with isBinary set.
func text(v any) (s string, isBinary bool, err error) {
	switch v := v.(type) {
	case nil:
		return "", false, nil
	case string:
		return v, false, nil
	case amqp.Symbol:
		return string(v), false, nil
	case []byte:
		return string(v), true, nil
	case bool:
		return strconv.FormatBool(v), false, nil
	case int8:
		return strconv.FormatInt(int64(v), 10), false, nil
	case int16:
		return strconv.FormatInt(int64(v), 10), false, nil
	case int32:
		return strconv.FormatInt(int64(v), 10), false, nil
	case int64:
		return strconv.FormatInt(v, 10), false, nil
	case int:
		return strconv.FormatInt(int64(v), 10), false, nil
	case uint8:
		return strconv.FormatUint(uint64(v), 10), false, nil
	case uint16:
		return strconv.FormatUint(uint64(v), 10), false, nil
	case uint32:
		return strconv.FormatUint(uint64(v), 10), false, nil
	case uint64:
		return strconv.FormatUint(v, 10), false, nil
	case uint:
		return strconv.FormatUint(uint64(v), 10), false, nil
	case float32:
		return strconv.FormatFloat(float64(v), 'g', -1, 32), false, nil
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64), false, nil
	case time.Time:
		return v.UTC().Format(time.RFC3339Nano), false, nil
	case amqp.UUID:
		return v.String(), false, nil
	}
	return "", false, fmt.Errorf("a value of AMQP type %T, not a simple type", v)
}

// MessageID is the text form of a message's message-id (binary in hex),
// and whether it has one: what HeaderMessageID carries and what the AMQP
// source de-duplicates by.
func MessageID(m *amqp.Message) (string, bool) {
	if m.Properties == nil || m.Properties.MessageID == nil {
		return "", false
	}
	if b, ok := m.Properties.MessageID.([]byte); ok {
		return hex.EncodeToString(b), true
	}
	s, _, err := text(m.Properties.MessageID)
	if err != nil {
		return "", false
	}
	return s, true
}

// body is a message's application data.
func (c *Codec) body(m *amqp.Message) ([]byte, error) {
	switch {
	case len(m.Sequence) > 0:
		return nil, c.errorf(ErrUndecodable, "an amqp-sequence body cannot map to a Kafka value")
	case len(m.Data) == 1:
		if len(m.Data[0]) > c.o.MaxBytes {
			return nil, c.errorf(ErrTooLarge, "body of %d bytes, more than the limit of %d", len(m.Data[0]), c.o.MaxBytes)
		}
		return m.Data[0], nil
	case len(m.Data) > 1:
		n := 0
		for _, d := range m.Data {
			n += len(d)
		}
		if n > c.o.MaxBytes {
			return nil, c.errorf(ErrTooLarge, "body of %d bytes, more than the limit of %d", n, c.o.MaxBytes)
		}
		out := make([]byte, 0, n)
		for _, d := range m.Data {
			out = append(out, d...)
		}
		return out, nil
	}
	switch v := m.Value.(type) {
	case nil:
		return nil, nil
	case []byte:
		if len(v) > c.o.MaxBytes {
			return nil, c.errorf(ErrTooLarge, "body of %d bytes, more than the limit of %d", len(v), c.o.MaxBytes)
		}
		return v, nil
	case string:
		if len(v) > c.o.MaxBytes {
			return nil, c.errorf(ErrTooLarge, "body of %d bytes, more than the limit of %d", len(v), c.o.MaxBytes)
		}
		return []byte(v), nil
	}
	return nil, c.errorf(ErrUndecodable, "an amqp-value body of type %T cannot map to a Kafka value", m.Value)
}

func recordSize(r *kgo.Record) int {
	n := len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return n
}

func base64Std(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func validUTF8(b []byte) bool { return utf8.Valid(b) }
