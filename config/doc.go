// Package config reads Meridian topology files (YAML, version 1): the
// regions, their Kafka clusters and gateways, the links between regions,
// and the routes that mirror topics over them.
//
// [Load] and [Parse] decode strictly, expand ${ENV} in string values, fill
// in defaults and validate. They report every problem at once as [Errors],
// one "FILE:LINE:COL: PATH: reason" line each. Nothing here opens sockets
// or reads certificate files; that happens when the gateway is built, and
// [File.ErrorAt] lets that code report a problem at the setting's position,
// in the same form. [File.Warnings] lists settings that are accepted but
// have no effect yet (gossip keys) or are risky (an unauthenticated admin
// API on all interfaces), each with the reason.
//
// Every value that came from ${ENV} is secret: [File.Secrets] lists them
// for the CLI and the gateway to redact (package internal/redact), and
// error messages here already print them as [redacted]. Settings that are
// always secret ([SASL] password, [Admin] token) have the type [Secret],
// which prints as [redacted] whatever prints it.
// Metadata is labels for people and tools; gateways never read it.
//
// The YAML library is gopkg.in/yaml.v3: its yaml.Node tree keeps the line
// and column of every value, which strict decoding and validation need to
// point at the offending spot; it is maintained; and it brings no other
// dependency. Its own strict mode (KnownFields) gives lines only and stops
// at the first problem, so this package walks the node tree itself.
package config
