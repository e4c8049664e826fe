package config

import _ "embed" // the schema file

// Schema is the JSON Schema (draft 2020-12) of topology file version 1:
// what `meridian schema` prints and what editors check a file against
// (examples/ carry a yaml-language-server modeline naming it).
//
// It is generated from the types of this package, their doc comments as
// descriptions, by TestSchemaUpToDate (go test ./config/ -run
// TestSchemaUpToDate -update), and that test fails when the types and the
// file disagree. The schema checks structure: fields, types, enumerations,
// the fields every file needs. What needs the whole file (references
// between regions, links and routes, address syntax, regular expressions)
// is validate's: a file the schema accepts can still be refused by
// `meridian validate`, never the other way round.
//
//go:embed topology.schema.json
var Schema []byte
