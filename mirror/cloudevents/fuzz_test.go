package cloudevents_test

import (
	"errors"
	"testing"

	"github.com/Azure/go-amqp"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/internal/alloctest"
	"github.com/meridian-gw/meridian/mirror/cloudevents"
)

// FuzzRecord feeds the decoder (AMQP message to Kafka record) three ways:
// the input as an encoded AMQP message (seeded with the golden inputs), as
// a structured-mode body and as a binary-mode body. It must never panic,
// fail only with an *Error, and allocate at most a small multiple of the
// input (64 KiB of slack for the fuzzing engine, alloctest says why).
func FuzzRecord(f *testing.F) {
	for _, in := range messages {
		b, err := in.m.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"specversion":"1.0","id":"1","source":"/s","type":"t","data":{"a":[1,2,3]}}`))
	f.Add([]byte(`{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"text/plain","data":"x"}`))
	f.Add([]byte(`{"specversion":"1.0","id":"1","source":"/s","type":"t","data_base64":"AAEC"}`))
	ct := "application/cloudevents+json"
	codecs := make([]*cloudevents.Codec, 0, 2)
	for _, mode := range []cloudevents.Mode{cloudevents.Binary, cloudevents.Structured} {
		c, err := cloudevents.New(cloudevents.Options{Address: "/queue/fuzz", Mode: mode, MaxBytes: 64 << 10})
		if err != nil {
			f.Fatal(err)
		}
		codecs = append(codecs, c)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var inputs []*amqp.Message
		var decoded amqp.Message
		if decoded.UnmarshalBinary(data) == nil {
			inputs = append(inputs, &decoded)
		}
		half := len(data) / 2
		inputs = append(inputs,
			&amqp.Message{Properties: &amqp.MessageProperties{ContentType: &ct}, Data: [][]byte{data[:half], data[half:]}},
			&amqp.Message{
				ApplicationProperties: map[string]any{"cloudEvents_specversion": "1.0", "cloudEvents_id": string(data[:half]), "cloudEvents_source": "/s", "cloudEvents_type": "t"},
				Properties:            &amqp.MessageProperties{ContentType: str(string(data[half:]))},
				Data:                  [][]byte{data},
			})
		for _, c := range codecs {
			for _, m := range inputs {
				var rec *kgo.Record
				var err error
				alloctest.Check(t, "Record", 64<<10+16*uint64(len(data)), func() { rec, err = c.Record(m) })
				if err != nil {
					var ce *cloudevents.Error
					if !errors.As(err, &ce) {
						t.Fatalf("Record: %v is not an *Error", err)
					}
					continue
				}
				// What the decoder produced maps back.
				if _, err := c.Message(rec, "id"); err != nil && !errors.As(err, new(*cloudevents.Error)) {
					t.Fatalf("Message: %v is not an *Error", err)
				}
			}
		}
	})
}
