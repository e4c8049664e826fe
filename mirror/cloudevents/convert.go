package cloudevents

import (
	"encoding/base64"
	"sort"
	"strings"
	"time"

	"github.com/Azure/go-amqp"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Record maps an AMQP message to a Kafka record (Topic and Partition left
// for the caller). Errors are *Error.
func (c *Codec) Record(m *amqp.Message) (*kgo.Record, error) {
	body, err := c.body(m)
	if err != nil {
		return nil, err
	}
	var ct string
	if p := m.Properties; p != nil && p.ContentType != nil {
		ct = *p.ContentType
	}
	// Split the application properties: attributes and the rest, sorted by
	// name so that the output does not depend on map order.
	names := make([]string, 0, len(m.ApplicationProperties))
	for k := range m.ApplicationProperties {
		names = append(names, k)
	}
	sort.Strings(names)
	var ev *event
	structured, batch := isStructured(ct)
	switch {
	case batch:
		return nil, c.errorf(ErrUndecodable, "content type %q: batched CloudEvents are not supported", ct)
	case structured:
		if ev, err = decodeJSON(body); err != nil {
			return nil, c.errorf(ErrUndecodable, "%v", err)
		}
	}
	rec := &kgo.Record{}
	var plainHeaders []kgo.RecordHeader
	binaryCE := false
	for _, k := range names {
		if name, ok := attrName(k); ok && name == "specversion" {
			binaryCE = !structured
		}
	}
	if binaryCE {
		ev = &event{contentType: ct, data: body, hasData: body != nil}
	}
	for _, k := range names {
		v := m.ApplicationProperties[k]
		s, isBin, err := text(v)
		if err != nil {
			return nil, c.errorf(ErrUndecodable, "application property %q: %v", k, err)
		}
		if name, ok := attrName(k); ok && binaryCE {
			if name == "" {
				return nil, c.errorf(ErrUndecodable, "application property %q names no attribute", k)
			}
			if v == nil {
				continue
			}
			if isBin {
				s = base64.StdEncoding.EncodeToString([]byte(s))
			}
			if name == "datacontenttype" {
				// The content-type property is the binding's place for it;
				// the property is read only in its absence.
				if ev.contentType == "" {
					ev.contentType = s
				}
				continue
			}
			ev.set(name, s)
			continue
		}
		plainHeaders = append(plainHeaders, kgo.RecordHeader{Key: k, Value: []byte(s)})
	}
	if ev != nil {
		if binaryCE {
			if err := ev.check(); err != nil {
				return nil, c.errorf(ErrUndecodable, "binary event: %v", err)
			}
			ev.sortAttrs()
		}
	}

	// The key.
	var key []byte
	var haveKey bool
	switch {
	case c.keyAttr != "" && ev != nil:
		if v, ok := ev.get(c.keyAttr); ok {
			key, haveKey = []byte(v), true
		}
	case c.keyAttr != "":
		// A plain message: the attribute's property under either prefix.
		for _, p := range []string{AMQPPrefix, AMQPPrefixColon} {
			if v, ok := m.ApplicationProperties[p+c.keyAttr]; ok && v != nil && !haveKey {
				s, _, _ := text(v) // checked above
				key, haveKey = []byte(s), true
			}
		}
	default:
		if v, ok := m.ApplicationProperties[c.o.KeyProperty]; ok && v != nil {
			s, _, _ := text(v) // checked above
			key, haveKey = []byte(s), true
		}
	}
	if !haveKey && c.o.KeyRequired {
		return nil, c.errorf(ErrMissingKey, "message has no %q", c.o.KeyProperty)
	}
	rec.Key = key

	switch {
	case ev == nil:
		if ct != "" {
			rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: ContentTypeHeader, Value: []byte(ct)})
		}
		rec.Value = body
	case c.o.Mode == Structured:
		rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: ContentTypeHeader, Value: []byte(StructuredContentType)})
		rec.Value = encodeJSON(ev)
	default:
		for _, a := range ev.attrs {
			rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: KafkaPrefix + a.name, Value: []byte(a.value)})
		}
		if ev.contentType != "" {
			rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: ContentTypeHeader, Value: []byte(ev.contentType)})
		}
		rec.Value = ev.data
	}
	rec.Headers = append(rec.Headers, plainHeaders...)
	if id, ok := MessageID(m); ok {
		rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: HeaderMessageID, Value: []byte(id)})
	}
	if p := m.Properties; p != nil {
		if p.Subject != nil {
			rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: HeaderSubject, Value: []byte(*p.Subject)})
		}
		if p.CreationTime != nil {
			rec.Timestamp = *p.CreationTime
		}
	}
	if n := recordSize(rec); n > c.o.MaxBytes {
		return nil, c.errorf(ErrTooLarge, "record of %d bytes (key, value, headers), more than the limit of %d", n, c.o.MaxBytes)
	}
	return rec, nil
}

// Message maps a Kafka record to an AMQP message. id is the message-id to
// use when the record carries none in HeaderMessageID ("" = none). Errors
// are *Error.
func (c *Codec) Message(r *kgo.Record, id string) (*amqp.Message, error) {
	if len(r.Value) > c.o.MaxBytes {
		return nil, c.errorf(ErrTooLarge, "value of %d bytes, more than the limit of %d", len(r.Value), c.o.MaxBytes)
	}
	var ct string
	var haveCT, binaryCE bool
	seen := make(map[string]bool, len(r.Headers))
	for _, h := range r.Headers {
		if seen[h.Key] {
			return nil, c.errorf(ErrUndecodable, "header %q appears more than once; AMQP application properties are a map", h.Key)
		}
		seen[h.Key] = true
		switch {
		case h.Key == ContentTypeHeader:
			ct, haveCT = string(h.Value), true
		case h.Key == KafkaPrefix+"specversion":
			binaryCE = true
		}
	}
	m := &amqp.Message{Properties: &amqp.MessageProperties{}, ApplicationProperties: map[string]any{}}
	var ev *event
	structured, batch := isStructured(ct)
	switch {
	case batch:
		return nil, c.errorf(ErrUndecodable, "content type %q: batched CloudEvents are not supported", ct)
	case structured:
		var err error
		if ev, err = decodeJSON(r.Value); err != nil {
			return nil, c.errorf(ErrUndecodable, "%v", err)
		}
		binaryCE = false
	case binaryCE:
		ev = &event{contentType: ct, data: r.Value, hasData: r.Value != nil}
	}
	for _, h := range r.Headers {
		switch {
		case h.Key == ContentTypeHeader:
		case h.Key == HeaderMessageID:
			id = string(h.Value)
		case h.Key == HeaderSubject:
			s := string(h.Value)
			m.Properties.Subject = &s
		case binaryCE && strings.HasPrefix(h.Key, KafkaPrefix):
			name := h.Key[len(KafkaPrefix):]
			if name == "" || !validUTF8(h.Value) {
				return nil, c.errorf(ErrUndecodable, "header %q is not a CloudEvents attribute in text", h.Key)
			}
			if name != "datacontenttype" {
				ev.set(name, string(h.Value))
			}
		case validUTF8(h.Value):
			m.ApplicationProperties[h.Key] = string(h.Value)
		default:
			m.ApplicationProperties[h.Key] = append([]byte(nil), h.Value...)
		}
	}
	if ev != nil && binaryCE {
		if err := ev.check(); err != nil {
			return nil, c.errorf(ErrUndecodable, "binary event: %v", err)
		}
		ev.sortAttrs()
	}

	// The key.
	switch {
	case r.Key == nil:
		if c.o.KeyRequired {
			return nil, c.errorf(ErrMissingKey, "record has no key for %q", c.o.KeyProperty)
		}
	case c.keyAttr != "" && ev != nil:
		if !validUTF8(r.Key) {
			return nil, c.errorf(ErrUndecodable, "key is not text, and %q is a CloudEvents attribute", c.o.KeyProperty)
		}
		ev.set(c.keyAttr, string(r.Key))
		ev.sortAttrs()
	default:
		// A plain property, or a plain record whose key attribute is
		// carried as the attribute's property.
		prop := c.o.KeyProperty
		if c.keyAttr != "" {
			prop = AMQPPrefix + c.keyAttr
		}
		if validUTF8(r.Key) {
			m.ApplicationProperties[prop] = string(r.Key)
		} else {
			m.ApplicationProperties[prop] = append([]byte(nil), r.Key...)
		}
	}

	var body []byte
	switch {
	case ev == nil:
		if haveCT {
			m.Properties.ContentType = &ct
		}
		body = r.Value
	case c.o.Mode == Structured:
		s := StructuredContentType
		m.Properties.ContentType = &s
		body = encodeJSON(ev)
	default:
		for _, a := range ev.attrs {
			m.ApplicationProperties[AMQPPrefix+a.name] = a.value
		}
		if ev.contentType != "" {
			s := ev.contentType
			m.Properties.ContentType = &s
		}
		body = ev.data
	}
	if body != nil {
		m.Data = [][]byte{body}
	} else {
		m.Value = amqp.Null{}
	}
	if id != "" {
		m.Properties.MessageID = id
	}
	if !r.Timestamp.IsZero() {
		t := r.Timestamp.UTC().Truncate(time.Millisecond) // AMQP timestamps are milliseconds
		m.Properties.CreationTime = &t
	}
	if len(m.ApplicationProperties) == 0 {
		m.ApplicationProperties = nil
	}
	n := len(body)
	for k, v := range m.ApplicationProperties {
		n += len(k)
		switch v := v.(type) {
		case string:
			n += len(v)
		case []byte:
			n += len(v)
		}
	}
	if n > c.o.MaxBytes {
		return nil, c.errorf(ErrTooLarge, "message of %d bytes (body, application properties), more than the limit of %d", n, c.o.MaxBytes)
	}
	return m, nil
}
