// Package cloudevents maps AMQP 1.0 messages to Kafka records and back, by
// the CloudEvents AMQP and Kafka protocol bindings (CloudEvents 1.0). It is
// the one place that knows both shapes, used by the AMQP endpoints (a
// cluster of kind amqp as a route's source or sink); it does no I/O, runs
// no goroutines and keeps no state beyond its Options.
//
// A Codec converts one message or record at a time: Codec.Record turns an
// AMQP message into a Kafka record (the topic is the caller's), and
// Codec.Message turns a Kafka record into an AMQP message. The input's mode
// is detected; Options.Mode is the mode of the output, so a structured
// event can arrive binary on the other side and the reverse.
//
// # Modes
//
// A message or record is a CloudEvent in structured mode when its content
// type is application/cloudevents+json (parameters such as charset allowed):
// the whole event is the body, a JSON object with the required attributes
// specversion (1.0), id, source and type, the data as "data" (JSON) or
// "data_base64". Batched mode (application/cloudevents-batch+json) is
// refused as undecodable. It is a CloudEvent in binary mode when it carries
// the specversion attribute as a property (cloudEvents_specversion or
// cloudEvents:specversion on AMQP, ce_specversion on Kafka): the attributes
// are properties, the data is the body. Anything else is a plain message and
// is carried as it is (properties, content type, body), whatever the Mode.
//
// # Mapping
//
//	AMQP message                              Kafka record
//	----------------------------------------  -------------------------------------------
//	application-property cloudEvents_NAME     header ce_NAME (binary mode)
//	  or cloudEvents:NAME (both read;           or member NAME of the JSON event in the
//	  cloudEvents_ written, as the binding      value (structured mode)
//	  asks of senders)
//	properties.content-type                   header content-type
//	  (binary: the datacontenttype;           (binary: the datacontenttype;
//	   structured: application/                 structured: application/
//	   cloudevents+json; charset=UTF-8)         cloudevents+json; charset=UTF-8)
//	body: data sections (joined), or an       value
//	  amqp-value of binary, string or null
//	other application-property P              header P (strings as they are; numbers,
//	                                            booleans, timestamps, UUIDs as text;
//	                                            binary as its bytes)
//	properties.message-id                     header meridian.amqp.message-id (text)
//	properties.subject                        header meridian.amqp.subject
//	properties.creation-time                  timestamp (zero if absent: the producer's)
//	the key property (Options.KeyProperty)    key
//
// In the other direction (Codec.Message) each row reads right to left; a
// header that is not valid UTF-8 becomes a binary application property, and
// the message-id is the header meridian.amqp.message-id when the record has
// one, otherwise the id the caller passes (the AMQP sink passes one derived
// from the source position, so a resend carries the same id). Not carried:
// the AMQP header section (durable, priority, TTL, delivery count),
// delivery and message annotations, footer, reply-to, correlation-id,
// group-id and the other properties; Kafka's partition and offset are the
// caller's business.
//
// Attribute values are written as text (the CloudEvents canonical string
// form: booleans true/false, integers in decimal, binary base64, timestamps
// RFC 3339), which both bindings accept. An application property of another
// AMQP type (a list, a map, an array) is undecodable.
//
// # The key
//
// Options.KeyProperty names where the Kafka key comes from and goes to.
// A name with the prefix cloudEvents_ or cloudEvents: names a CloudEvents
// attribute, found whatever the mode (an application property in binary mode,
// a member of the JSON event in structured mode); the default is
// cloudEvents_partitionkey, the partitioning extension that the Kafka binding
// maps to the key. Any other name is a plain application property. The key
// keeps its attribute or property as well, so nothing is lost either way.
// A missing key is a null key, unless Options.KeyRequired, when it is an
// error (ErrMissingKey).
//
// # Errors
//
// Input that cannot be mapped is an *Error naming the address and the reason
// (ErrMissingKey, ErrUndecodable, ErrTooLarge, for errors.Is), with
// Error.Condition the AMQP error condition to reject a message with. The
// caller dead-letters it or rejects it; this package never drops anything.
// Options.MaxBytes bounds what a call reads and makes: a body larger than it
// is refused before it is parsed, and so is an output record or message
// (key, value and headers, or body and properties) larger than it. A
// call allocates at most a small multiple of its input.
package cloudevents
