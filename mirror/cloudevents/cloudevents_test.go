package cloudevents_test

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/Azure/go-amqp"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/internal/golden"
	"github.com/meridian-gw/meridian/mirror/cloudevents"
)

func str(s string) *string { return &s }

var created = time.Date(2026, 12, 4, 21, 0, 0, 123_000_000, time.UTC)

// messages are the AMQP inputs of the golden tests, in order.
var messages = []struct {
	name string
	m    *amqp.Message
}{
	{"binary event, json data, underscore prefix", &amqp.Message{
		Properties: &amqp.MessageProperties{MessageID: "m-1", Subject: str("orders"), ContentType: str("application/json"), CreationTime: &created},
		ApplicationProperties: map[string]any{
			"cloudEvents_specversion": "1.0", "cloudEvents_id": "e-1", "cloudEvents_source": "/plant/7",
			"cloudEvents_type": "com.example.order.created", "cloudEvents_time": "2026-12-04T21:00:00Z",
			"cloudEvents_partitionkey": "order-42", "tenant": "acme", "retries": int32(3), "urgent": true,
		},
		Data: [][]byte{[]byte(`{"order": 42, "qty": 3}`)},
	}},
	{"binary event, colon prefix, text data, uint64 message-id", &amqp.Message{
		Properties: &amqp.MessageProperties{MessageID: uint64(7), ContentType: str("text/plain")},
		ApplicationProperties: map[string]any{
			"cloudEvents:specversion": "1.0", "cloudEvents:id": "e-2", "cloudEvents:source": "urn:sensor:9",
			"cloudEvents:type": "reading", "cloudEvents:seq": int64(99),
		},
		Data: [][]byte{[]byte("21.5 C")},
	}},
	{"binary event, binary data, two data sections", &amqp.Message{
		Properties: &amqp.MessageProperties{ContentType: str("application/octet-stream")},
		ApplicationProperties: map[string]any{
			"cloudEvents_specversion": "1.0", "cloudEvents_id": "e-3", "cloudEvents_source": "/s",
			"cloudEvents_type": "blob", "cloudEvents_partitionkey": "k3",
		},
		Data: [][]byte{{0, 1, 2}, {0xff, 0xfe}},
	}},
	{"structured event, json data", &amqp.Message{
		Properties:            &amqp.MessageProperties{MessageID: "m-4", ContentType: str("application/cloudevents+json; charset=utf-8")},
		ApplicationProperties: map[string]any{"tenant": "acme"},
		Data: [][]byte{[]byte(`{"specversion":"1.0","id":"e-4","source":"/plant/7","type":"com.example.order.created",
			"datacontenttype":"application/json","partitionkey":"order-43","priority":5,"data":{"order": 43}}`)},
	}},
	{"structured event, base64 data", &amqp.Message{
		Properties: &amqp.MessageProperties{ContentType: str("application/cloudevents+json")},
		Data: [][]byte{[]byte(`{"specversion":"1.0","id":"e-5","source":"/s","type":"blob",
			"datacontenttype":"image/png","data_base64":"iVBORw0K"}`)},
	}},
	{"plain message, amqp-value string body", &amqp.Message{
		Properties:            &amqp.MessageProperties{MessageID: amqp.UUID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, ContentType: str("text/plain")},
		ApplicationProperties: map[string]any{"region": "eu", "cloudEvents_partitionkey": "p-6"},
		Value:                 "hello",
	}},
	{"binary event without data", &amqp.Message{
		ApplicationProperties: map[string]any{
			"cloudEvents_specversion": "1.0", "cloudEvents_id": "e-7", "cloudEvents_source": "/s", "cloudEvents_type": "ping",
		},
	}},
}

// records are the Kafka inputs of the golden tests, in order.
var records = []struct {
	name string
	r    *kgo.Record
}{
	{"binary event, json data", &kgo.Record{Key: []byte("order-42"), Value: []byte(`{"order":42}`), Timestamp: created, Headers: []kgo.RecordHeader{
		{Key: "ce_specversion", Value: []byte("1.0")}, {Key: "ce_id", Value: []byte("e-1")}, {Key: "ce_source", Value: []byte("/plant/7")},
		{Key: "ce_type", Value: []byte("com.example.order.created")}, {Key: "content-type", Value: []byte("application/json")},
		{Key: "tenant", Value: []byte("acme")}, {Key: "meridian.amqp.subject", Value: []byte("orders")},
	}}},
	{"structured event", &kgo.Record{Key: []byte("k2"), Value: []byte(`{"specversion":"1.0","id":"e-2","source":"/s","type":"t","datacontenttype":"text/plain","data":"hi there"}`),
		Headers: []kgo.RecordHeader{{Key: "content-type", Value: []byte("application/cloudevents+json")}, {Key: "meridian.amqp.message-id", Value: []byte("m-2")}}}},
	{"plain record, binary header, binary key", &kgo.Record{Key: []byte{0xff, 0x00}, Value: []byte("raw"), Headers: []kgo.RecordHeader{
		{Key: "meridian.origin", Value: []byte{0x01, 0x02}}, {Key: "tenant", Value: []byte("acme")},
	}}},
	{"binary event, null key, null value", &kgo.Record{Headers: []kgo.RecordHeader{
		{Key: "ce_specversion", Value: []byte("1.0")}, {Key: "ce_id", Value: []byte("e-4")}, {Key: "ce_source", Value: []byte("/s")}, {Key: "ce_type", Value: []byte("ping")},
	}}},
}

// wire sends m through go-amqp's encoding and back, so the inputs are
// what a receiver would see.
func wire(t *testing.T, m *amqp.Message) *amqp.Message {
	t.Helper()
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var out amqp.Message
	if err := out.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	return &out
}

func renderRecord(b *strings.Builder, r *kgo.Record) {
	fmt.Fprintf(b, "  key: %s\n", quoteBytes(r.Key))
	for _, h := range r.Headers {
		fmt.Fprintf(b, "  header %s: %s\n", h.Key, quoteBytes(h.Value))
	}
	if !r.Timestamp.IsZero() {
		fmt.Fprintf(b, "  timestamp: %s\n", r.Timestamp.UTC().Format(time.RFC3339Nano))
	}
	fmt.Fprintf(b, "  value: %s\n", quoteBytes(r.Value))
}

func renderMessage(b *strings.Builder, m *amqp.Message) {
	if p := m.Properties; p != nil {
		if p.MessageID != nil {
			fmt.Fprintf(b, "  message-id: %T %v\n", p.MessageID, p.MessageID)
		}
		if p.Subject != nil {
			fmt.Fprintf(b, "  subject: %q\n", *p.Subject)
		}
		if p.ContentType != nil {
			fmt.Fprintf(b, "  content-type: %q\n", *p.ContentType)
		}
		if p.CreationTime != nil {
			fmt.Fprintf(b, "  creation-time: %s\n", p.CreationTime.UTC().Format(time.RFC3339Nano))
		}
	}
	keys := make([]string, 0, len(m.ApplicationProperties))
	for k := range m.ApplicationProperties {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := m.ApplicationProperties[k]
		if bs, ok := v.([]byte); ok {
			fmt.Fprintf(b, "  property %s: binary %s\n", k, quoteBytes(bs))
			continue
		}
		fmt.Fprintf(b, "  property %s: %T %q\n", k, v, fmt.Sprint(v))
	}
	switch {
	case len(m.Data) > 0:
		fmt.Fprintf(b, "  data: %s\n", quoteBytes(bytes.Join(m.Data, nil)))
	default:
		fmt.Fprintf(b, "  value: %T %v\n", m.Value, m.Value)
	}
}

func quoteBytes(b []byte) string {
	if b == nil {
		return "null"
	}
	return fmt.Sprintf("%q", b)
}

func codec(t *testing.T, o cloudevents.Options) *cloudevents.Codec {
	t.Helper()
	if o.Address == "" {
		o.Address = "/queue/events"
	}
	c, err := cloudevents.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestGolden maps every input message to a record and every input record
// to a message in both modes; testdata/*.golden hold the results (-update
// rewrites them).
func TestGolden(t *testing.T) {
	for _, mode := range []cloudevents.Mode{cloudevents.Binary, cloudevents.Structured} {
		t.Run(mode.String(), func(t *testing.T) {
			c := codec(t, cloudevents.Options{Mode: mode})
			var b strings.Builder
			for _, in := range messages {
				fmt.Fprintf(&b, "== %s\n", in.name)
				m := wire(t, in.m)
				rec, err := c.Record(m)
				if err != nil {
					fmt.Fprintf(&b, "  error: %v\n", err)
					continue
				}
				renderRecord(&b, rec)
			}
			golden.Check(t, filepath.Join("testdata", "to_kafka_"+mode.String()+".golden"), b.String())

			b.Reset()
			for _, in := range records {
				fmt.Fprintf(&b, "== %s\n", in.name)
				m, err := c.Message(in.r, "pos-1")
				if err != nil {
					fmt.Fprintf(&b, "  error: %v\n", err)
					continue
				}
				renderMessage(&b, wire(t, m))
			}
			golden.Check(t, filepath.Join("testdata", "to_amqp_"+mode.String()+".golden"), b.String())
		})
	}
}

// TestBadInput: every input that cannot map is an *Error naming the
// address, with the reason for errors.Is.
func TestBadInput(t *testing.T) {
	ce := func(extra map[string]any) map[string]any {
		m := map[string]any{"cloudEvents_specversion": "1.0", "cloudEvents_id": "x", "cloudEvents_source": "/s", "cloudEvents_type": "t"}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	structured := func(body string) *amqp.Message {
		return &amqp.Message{Properties: &amqp.MessageProperties{ContentType: str("application/cloudevents+json")}, Data: [][]byte{[]byte(body)}}
	}
	tests := []struct {
		name   string
		opts   cloudevents.Options
		m      *amqp.Message
		r      *kgo.Record
		reason error
		detail string
	}{
		{name: "missing required key attribute", opts: cloudevents.Options{KeyRequired: true},
			m: &amqp.Message{ApplicationProperties: ce(nil), Data: [][]byte{[]byte("x")}}, reason: cloudevents.ErrMissingKey, detail: `no "cloudEvents_partitionkey"`},
		{name: "missing required key property", opts: cloudevents.Options{KeyProperty: "device", KeyRequired: true},
			m: &amqp.Message{ApplicationProperties: map[string]any{"other": "x"}, Value: "v"}, reason: cloudevents.ErrMissingKey, detail: `no "device"`},
		{name: "structured body not JSON", m: structured(`{"specversion":`), reason: cloudevents.ErrUndecodable, detail: "structured event"},
		{name: "structured without id", m: structured(`{"specversion":"1.0","source":"/s","type":"t"}`), reason: cloudevents.ErrUndecodable, detail: `"id" missing`},
		{name: "structured of spec 0.3", m: structured(`{"specversion":"0.3","id":"1","source":"/s","type":"t"}`), reason: cloudevents.ErrUndecodable, detail: "only 1.0"},
		{name: "structured bad base64", m: structured(`{"specversion":"1.0","id":"1","source":"/s","type":"t","data_base64":"!!"}`), reason: cloudevents.ErrUndecodable, detail: "data_base64"},
		{name: "structured attribute object", m: structured(`{"specversion":"1.0","id":"1","source":"/s","type":"t","x":{}}`), reason: cloudevents.ErrUndecodable, detail: `attribute "x"`},
		{name: "batch", m: &amqp.Message{Properties: &amqp.MessageProperties{ContentType: str("application/cloudevents-batch+json")}, Data: [][]byte{[]byte("[]")}},
			reason: cloudevents.ErrUndecodable, detail: "batched"},
		{name: "binary without type", m: &amqp.Message{ApplicationProperties: map[string]any{"cloudEvents_specversion": "1.0", "cloudEvents_id": "x", "cloudEvents_source": "/s"}},
			reason: cloudevents.ErrUndecodable, detail: `"type" missing`},
		{name: "sequence body", m: &amqp.Message{Sequence: [][]any{{"a"}}}, reason: cloudevents.ErrUndecodable, detail: "amqp-sequence"},
		{name: "map value body", m: &amqp.Message{Value: map[string]any{"a": 1}}, reason: cloudevents.ErrUndecodable, detail: "amqp-value body"},
		{name: "list application property", m: &amqp.Message{ApplicationProperties: map[string]any{"l": []string{"a"}}, Value: "v"},
			reason: cloudevents.ErrUndecodable, detail: `application property "l"`},
		{name: "body too large", opts: cloudevents.Options{MaxBytes: 10}, m: &amqp.Message{Data: [][]byte{make([]byte, 11)}}, reason: cloudevents.ErrTooLarge, detail: "body of 11 bytes"},
		{name: "record too large with headers", opts: cloudevents.Options{MaxBytes: 40},
			m: &amqp.Message{ApplicationProperties: map[string]any{"big": strings.Repeat("x", 40)}, Data: [][]byte{[]byte("v")}}, reason: cloudevents.ErrTooLarge, detail: "record of"},

		{name: "record without required key", opts: cloudevents.Options{KeyRequired: true}, r: &kgo.Record{Value: []byte("v")}, reason: cloudevents.ErrMissingKey, detail: "no key"},
		{name: "record value too large", opts: cloudevents.Options{MaxBytes: 2}, r: &kgo.Record{Value: []byte("vvv")}, reason: cloudevents.ErrTooLarge, detail: "value of 3 bytes"},
		{name: "record header twice", r: &kgo.Record{Headers: []kgo.RecordHeader{{Key: "a"}, {Key: "a"}}}, reason: cloudevents.ErrUndecodable, detail: `"a" appears more than once`},
		{name: "record structured bad JSON", r: &kgo.Record{Value: []byte("{"), Headers: []kgo.RecordHeader{{Key: "content-type", Value: []byte("application/cloudevents+json")}}},
			reason: cloudevents.ErrUndecodable, detail: "structured event"},
		{name: "record binary attribute not text", r: &kgo.Record{Headers: []kgo.RecordHeader{{Key: "ce_specversion", Value: []byte("1.0")}, {Key: "ce_id", Value: []byte{0xff}}}},
			reason: cloudevents.ErrUndecodable, detail: `"ce_id"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Address = "/queue/in"
			c := codec(t, tt.opts)
			var err error
			if tt.m != nil {
				_, err = c.Record(tt.m)
			} else {
				_, err = c.Message(tt.r, "")
			}
			var ce *cloudevents.Error
			if !errors.As(err, &ce) {
				t.Fatalf("got %v, want an *Error", err)
			}
			if !errors.Is(err, tt.reason) {
				t.Errorf("got reason %v, want %v", ce.Reason, tt.reason)
			}
			if !strings.Contains(err.Error(), `"/queue/in"`) || !strings.Contains(err.Error(), tt.detail) {
				t.Errorf("got %q, want the address and %q", err, tt.detail)
			}
			if ce.Condition() == "" || ce.ReasonLabel() == "" {
				t.Errorf("no condition or label for %v", err)
			}
		})
	}
}

// TestRoundTrip: a binary AMQP event that goes to Kafka and back (through
// either Kafka mode) comes back with its attributes, properties, key and
// data.
func TestRoundTrip(t *testing.T) {
	in := messages[0].m
	for _, mode := range []cloudevents.Mode{cloudevents.Binary, cloudevents.Structured} {
		t.Run(mode.String(), func(t *testing.T) {
			toKafka := codec(t, cloudevents.Options{Mode: mode})
			toAMQP := codec(t, cloudevents.Options{Mode: cloudevents.Binary})
			rec, err := toKafka.Record(wire(t, in))
			if err != nil {
				t.Fatal(err)
			}
			if string(rec.Key) != "order-42" {
				t.Errorf("got key %q, want order-42", rec.Key)
			}
			out, err := toAMQP.Message(rec, "unused")
			if err != nil {
				t.Fatal(err)
			}
			out = wire(t, out)
			want := map[string]any{}
			for k, v := range in.ApplicationProperties {
				want[k] = fmt.Sprint(v) // non-attribute properties come back as text
			}
			got := map[string]any{}
			for k, v := range out.ApplicationProperties {
				got[k] = fmt.Sprint(v)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got properties %v, want %v", got, want)
			}
			data := bytes.Join(out.Data, nil)
			if mode == cloudevents.Binary && string(data) != string(in.Data[0]) {
				t.Errorf("got data %q, want %q", data, in.Data[0])
			}
			if mode == cloudevents.Structured && string(data) != `{"order":42,"qty":3}` { // compacted by the JSON format
				t.Errorf("got data %q", data)
			}
			if id, _ := cloudevents.MessageID(out); id != "m-1" {
				t.Errorf("got message-id %q, want m-1", id)
			}
			if s := out.Properties.Subject; s == nil || *s != "orders" {
				t.Errorf("got subject %v, want orders", s)
			}
			if ct := out.Properties.CreationTime; ct == nil || !ct.Equal(created) {
				t.Errorf("got creation time %v, want %v", ct, created)
			}
		})
	}
}

func TestParseMode(t *testing.T) {
	for _, s := range []string{"", "binary", "structured"} {
		if _, err := cloudevents.ParseMode(s); err != nil {
			t.Errorf("ParseMode(%q): %v", s, err)
		}
	}
	if _, err := cloudevents.ParseMode("batch"); err == nil {
		t.Error("ParseMode(batch) succeeded")
	}
	if _, err := cloudevents.New(cloudevents.Options{KeyProperty: "cloudEvents_"}); err == nil {
		t.Error("a key property naming no attribute was accepted")
	}
}
