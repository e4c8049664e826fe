package config

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/invopop/jsonschema"
	sjs "github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"

	"github.com/meridian-gw/meridian/internal/golden"
)

// schemaRequired lists, per type, the fields a file must write (validate
// reports them missing); schemaEnums the closed sets of words a field
// takes. The lists validate itself checks against are reused.
var (
	schemaRequired = map[string][]string{
		"File": {"version", "regions"}, "Region": {"name"}, "Cluster": {"name", "kind"},
		"AMQPCluster": {"url", "addresses"},
		"Gateway":     {"name"}, "Link": {"between"}, "Route": {"name", "from", "to", "topics"},
		"TopicFilter": {"include"}, "GroupFilter": {"include"}, "SASL": {"mechanism", "username", "password"},
		"Admin": {"listen"},
	}
	schemaEnums = map[string]map[string][]string{
		"Cluster":     {"kind": {"kafka", "amqp"}},
		"AMQPCluster": {"mode": amqpModes},
		"Link":        {"transport": {"quic", "amqp"}, "compression": compressions},
		"Defaults":    {"compression": compressions},
		"Route":       {"start_at": {"earliest", "latest"}},
		"SASL":        {"mechanism": saslMechanisms},
		"Admin":       {"open": AdminReads},
	}
)

// generateSchema reflects the schema from File and this package's comments.
func generateSchema(t *testing.T) []byte {
	t.Helper()
	r := &jsonschema.Reflector{FieldNameTag: "yaml", RequiredFromJSONSchemaTags: true, Anonymous: true,
		Mapper: func(rt reflect.Type) *jsonschema.Schema {
			switch rt {
			case reflect.TypeFor[Secret]():
				return &jsonschema.Schema{Type: "string", Description: "a secret: write it as ${ENV}"}
			case reflect.TypeFor[BitRate]():
				return &jsonschema.Schema{Type: "string", Pattern: `^[0-9.]+ ?[A-Za-z]*$`, Description: `a bit rate such as "10Mbit"`}
			case reflect.TypeFor[ByteSize]():
				return &jsonschema.Schema{Type: "string", Pattern: `^[0-9.]+ ?[A-Za-z]*$`, Description: `a byte size such as "64MiB"`}
			case reflect.TypeFor[time.Duration]():
				return &jsonschema.Schema{Type: "string", Pattern: `^([0-9.]+(ns|us|µs|ms|s|m|h))+$`, Description: `a duration such as "2s" or "500ms"`}
			}
			return nil
		}}
	if err := r.AddGoComments("github.com/meridian-gw/meridian/config", "."); err != nil {
		t.Fatal(err)
	}
	s := r.Reflect(&File{})
	s.ID = "urn:meridian:topology:1"
	s.Title = "Meridian topology file, version 1"
	for name, def := range s.Definitions {
		def.Required = schemaRequired[name]
		for field, words := range schemaEnums[name] {
			p, ok := def.Properties.Get(field)
			if !ok {
				t.Fatalf("schemaEnums: %s has no field %s", name, field)
			}
			if p.Type == "array" {
				p = p.Items
			}
			for _, w := range words {
				p.Enum = append(p.Enum, w)
			}
		}
	}
	if v, ok := s.Definitions["File"].Properties.Get("version"); ok {
		v.Const = 1
	}
	if b, ok := s.Definitions["Link"].Properties.Get("between"); ok {
		b.MinItems, b.MaxItems = ptrU(2), ptrU(2)
	}
	// admin: a listen address alone, or the mapping (see Admin.shorthand).
	admin := s.Definitions["Admin"]
	s.Definitions["Admin"] = &jsonschema.Schema{OneOf: []*jsonschema.Schema{
		{Type: "string", Description: "the listen address alone (host:port)"}, admin}}
	out, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(out, '\n')
}

func ptrU(n uint64) *uint64 { return &n }

// TestSchemaUpToDate regenerates the schema and compares it with
// topology.schema.json, which Schema embeds (-update rewrites the file).
func TestSchemaUpToDate(t *testing.T) {
	golden.Check(t, "topology.schema.json", string(generateSchema(t)))
}

// compiledSchema compiles Schema with a draft 2020-12 validator.
func compiledSchema(t *testing.T) *sjs.Schema {
	t.Helper()
	doc, err := sjs.UnmarshalJSON(bytes.NewReader(Schema))
	if err != nil {
		t.Fatal(err)
	}
	c := sjs.NewCompiler()
	if err := c.AddResource("topology.schema.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("topology.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// yamlInstance decodes a topology file as the generic value the schema
// validates (what an editor's YAML language server checks).
func yamlInstance(data []byte) (any, error) {
	var v any
	if err := yaml.Unmarshal(data, &v); err != nil {
		return nil, err
	}
	// Through JSON, so that numbers and maps have the validator's types.
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return sjs.UnmarshalJSON(bytes.NewReader(b))
}

// TestSchemaAcceptsGoodFiles: every example and golden good file validates.
func TestSchemaAcceptsGoodFiles(t *testing.T) {
	s := compiledSchema(t)
	files, _ := filepath.Glob("testdata/good/*.yaml")
	examples, _ := filepath.Glob("../examples/*.yaml")
	files = append(files, examples...)
	if len(examples) == 0 || len(files) == len(examples) {
		t.Fatal("no examples or no good files found")
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		v, err := yamlInstance(data)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if err := s.Validate(v); err != nil {
			t.Errorf("%s: the schema refuses it:\n%v", f, err)
		}
	}
	for _, f := range examples {
		data, _ := os.ReadFile(f)
		if !bytes.HasPrefix(data, []byte("# yaml-language-server: $schema=../config/topology.schema.json\n")) {
			t.Errorf("%s: first line is not the yaml-language-server modeline naming ../config/topology.schema.json", f)
		}
	}
}

// schemaRefuses are the golden bad files whose fault is structural (a
// field's type, an unknown field, a missing required field, a word outside
// its set, the top level's shape): the schema must refuse each. The others
// need validate (references, syntax inside strings, values in range).
var schemaRefuses = []string{
	"bad-duration", "bad-passthrough", "empty", "link-one-endpoint", "merge-and-alias", "missing-version",
	"top-level-list", "unknown-compression", "unknown-kind", "unknown-top-level-key", "version-2",
	"wrong-type-int", "wrong-type-list", "wrong-type-mapping", "bad-start-at-and-discover",
}

func TestSchemaRefusesStructuralBadFiles(t *testing.T) {
	s := compiledSchema(t)
	files, _ := filepath.Glob("testdata/bad/*.yaml")
	var refused []string
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		v, err := yamlInstance(data)
		if err != nil {
			continue // not YAML an editor could check either (tabs, two documents, ...)
		}
		if v == nil {
			v = map[string]any{} // an empty file is an empty mapping to an editor
		}
		if s.Validate(v) != nil {
			refused = append(refused, name)
		}
	}
	for _, want := range schemaRefuses {
		if !slices.Contains(refused, want) {
			t.Errorf("the schema accepts testdata/bad/%s.yaml, whose fault is structural", want)
		}
	}
	t.Logf("the schema refuses %d of %d bad files: %v", len(refused), len(files), refused)
}
