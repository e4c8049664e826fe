package cloudevents

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
)

// decodeJSON reads a structured-mode event. Attribute values may be
// strings, numbers or booleans (kept as their text); data may be any JSON
// value, or data_base64 a base64 string.
func decodeJSON(b []byte) (*event, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("structured event: %w", err)
	}
	ev := &event{attrs: make([]attr, 0, len(raw))}
	var data, data64 json.RawMessage
	for name, v := range raw {
		switch name {
		case "data":
			data = v
			continue
		case "data_base64":
			data64 = v
			continue
		}
		if name == "" {
			return nil, fmt.Errorf("structured event: an attribute with an empty name")
		}
		s, err := attrText(v)
		if err != nil {
			return nil, fmt.Errorf("structured event: attribute %q: %w", name, err)
		}
		if name == "datacontenttype" {
			ev.contentType = s
			continue
		}
		ev.attrs = append(ev.attrs, attr{name, s})
	}
	if data != nil && data64 != nil {
		return nil, fmt.Errorf("structured event: both data and data_base64")
	}
	switch {
	case data64 != nil:
		var s string
		if err := json.Unmarshal(data64, &s); err != nil {
			return nil, fmt.Errorf("structured event: data_base64 is not a string: %w", err)
		}
		d, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("structured event: data_base64: %w", err)
		}
		ev.data, ev.hasData = d, true
	case data != nil:
		ev.hasData = true
		if !isJSON(ev.contentType) && len(data) > 0 && data[0] == '"' {
			// Text data of a non-JSON type travels as a JSON string.
			var s string
			if err := json.Unmarshal(data, &s); err != nil {
				return nil, fmt.Errorf("structured event: data: %w", err)
			}
			ev.data = []byte(s)
		} else {
			ev.data = []byte(data)
		}
	}
	if err := ev.check(); err != nil {
		return nil, fmt.Errorf("structured event: %w", err)
	}
	ev.sortAttrs()
	return ev, nil
}

// attrText is an attribute's JSON value as canonical text.
func attrText(v json.RawMessage) (string, error) {
	v = bytes.TrimSpace(v)
	if len(v) == 0 {
		return "", fmt.Errorf("no value")
	}
	switch v[0] {
	case '"':
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return "", err
		}
		return s, nil
	case 't', 'f':
		var b bool
		if err := json.Unmarshal(v, &b); err != nil {
			return "", err
		}
		if b {
			return "true", nil
		}
		return "false", nil
	case '{', '[', 'n':
		return "", fmt.Errorf("not a string, number or boolean")
	}
	var n json.Number
	if err := json.Unmarshal(v, &n); err != nil {
		return "", err
	}
	return n.String(), nil
}

// check holds the attributes CloudEvents 1.0 requires.
func (ev *event) check() error {
	v, ok := ev.get("specversion")
	switch {
	case !ok:
		return fmt.Errorf("no specversion")
	case v != "1.0":
		return fmt.Errorf("specversion %q, only 1.0 is supported", v)
	}
	for _, req := range []string{"id", "source", "type"} {
		if v, ok := ev.get(req); !ok || v == "" {
			return fmt.Errorf("required attribute %q missing or empty", req)
		}
	}
	return nil
}

// encodeJSON writes ev as a structured-mode event: the attributes as
// strings in sortAttrs order, then datacontenttype, then data as JSON when
// the content type is JSON and the data is valid JSON, as a string when
// the content type is text, otherwise as data_base64.
func encodeJSON(ev *event) []byte {
	var b bytes.Buffer
	b.Grow(64 + len(ev.data)*4/3)
	b.WriteByte('{')
	first := true
	field := func(name string) {
		if !first {
			b.WriteByte(',')
		}
		first = false
		writeString(&b, name)
		b.WriteByte(':')
	}
	for _, a := range ev.attrs {
		field(a.name)
		writeString(&b, a.value)
	}
	if ev.contentType != "" {
		field("datacontenttype")
		writeString(&b, ev.contentType)
	}
	if ev.hasData {
		switch {
		case isJSON(ev.contentType) && json.Valid(ev.data):
			field("data")
			if err := json.Compact(&b, ev.data); err != nil {
				b.Write(ev.data) // valid, so Compact cannot fail
			}
		case strings.HasPrefix(ev.contentType, "text/") && validUTF8(ev.data):
			field("data")
			writeString(&b, string(ev.data))
		default:
			field("data_base64")
			writeString(&b, base64Std(ev.data))
		}
	}
	b.WriteByte('}')
	return b.Bytes()
}

func writeString(b *bytes.Buffer, s string) {
	enc, _ := json.Marshal(s) // a string always marshals
	b.Write(enc)
}
