package config

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	goccy "github.com/goccy/go-yaml"
	goccyparser "github.com/goccy/go-yaml/parser"
	"gopkg.in/yaml.v3"

	"github.com/meridian-gw/meridian/internal/units"
)

// pos is a 1-based position in the file.
type pos struct{ line, col int }

// The decoder visits at most aliasFactor values per node in the file, plus
// aliasSlack, so that a small file cannot use YAML aliases to expand into
// billions of values ("billion laughs"). Without aliases it visits each
// value once.
const (
	aliasFactor = 10
	aliasSlack  = 10_000
)

// decoder turns a yaml.Node tree into Go values strictly: every unknown key,
// duplicate key and type mismatch becomes an Error at the node's position,
// and decoding carries on so that one run reports all of them.
type decoder struct {
	file string
	errs Errors

	// pos maps a path ("routes[2].from") to where it is written: the key
	// of a mapping field, or the element of a list. validate uses it to
	// place its errors.
	pos map[string]pos
	// bad holds paths whose value could not be decoded. validate keeps
	// quiet about them and everything under them, since the decode error
	// already explains the problem.
	bad map[string]bool

	envErrs map[*yaml.Node][]string // from expandEnv, reported on decode
	envDone map[*yaml.Node]bool
	// unsetEnv holds, with Options.UnsetEnvWarns, the unset variables of a
	// scalar (expanded to their own "${NAME}"), reported on decode as
	// warnings.
	envOptional bool
	unsetEnv    map[*yaml.Node][]string
	warns       Errors
	secrets     []string            // values that came from ${ENV}, in file order
	expanded    map[*yaml.Node]bool // scalars that held ${ENV}
	fromEnv     map[string]bool     // paths decoded from those scalars
	nodes       int                 // values in the tree, counted by expandEnv
	visits      int                 // values decoded, following aliases
	maxVisits   int
	exhausted   bool

	data  []byte      // the file, for exprs
	exprs exprSources // filter expressions, placed by validate
}

func newDecoder(file string) *decoder {
	return &decoder{
		file:    file,
		pos:     make(map[string]pos),
		bad:     make(map[string]bool),
		envErrs: make(map[*yaml.Node][]string),
		envDone: make(map[*yaml.Node]bool),

		unsetEnv: make(map[*yaml.Node][]string),

		expanded: make(map[*yaml.Node]bool),
		fromEnv:  make(map[string]bool),
	}
}

func (d *decoder) errorAt(p pos, path, format string, args ...any) {
	d.errs = append(d.errs, &Error{
		File:   d.file,
		Line:   max(p.line, 1),
		Col:    max(p.col, 1),
		Path:   path,
		Reason: fmt.Sprintf(format, args...),
	})
}

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	d.errorAt(nodePos(n), path, format, args...)
}

func nodePos(n *yaml.Node) pos {
	if n == nil {
		return pos{1, 1}
	}
	return pos{n.Line, n.Column}
}

// parseYAML parses data into a node tree and returns the top-level node
// of its first document (nil for an empty file). ok is false when that
// document is not valid YAML; problems with later documents are recorded
// but do not stop decoding the first.
func (d *decoder) parseYAML(data []byte) (root *yaml.Node, ok bool) {
	d.data = data
	d.exprs.size = len(data)
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	switch err := decodeNode(dec, &doc); {
	case errors.Is(err, io.EOF):
		return nil, true
	case err != nil:
		d.syntaxError(data, err)
		return nil, false
	}
	if len(doc.Content) > 0 {
		root = doc.Content[0]
	}
	// A topology file holds one document. Tolerate empty trailing
	// documents (a stray final "---"), reject anything else.
	for {
		var next yaml.Node
		err := decodeNode(dec, &next)
		if errors.Is(err, io.EOF) {
			return root, true
		}
		if err != nil {
			d.syntaxError(data, err)
			return root, true
		}
		if len(next.Content) == 0 || isNull(next.Content[0]) && next.Content[0].Value == "" {
			continue
		}
		d.errorf(next.Content[0], "", "unexpected second YAML document; a topology file holds exactly one (remove the \"---\" separator or split the file)")
		return root, true
	}
}

// decodeNode is dec.Decode(n) that also turns a panic in the YAML parser
// into an error, so that no input can crash Parse.
func decodeNode(dec *yaml.Decoder, n *yaml.Node) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("yaml: internal parser error: %v", r)
		}
	}()
	return dec.Decode(n)
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntaxError reports an error from the YAML parser. yaml.v3 only gives a
// line (sometimes not even that), so the column is usually 1.
func (d *decoder) syntaxError(data []byte, err error) {
	msg := err.Error()
	line := 1
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		if n, convErr := strconv.Atoi(m[1]); convErr == nil && n > 0 {
			line = n
		}
		msg = m[2]
	} else {
		msg = strings.TrimPrefix(msg, "yaml: ")
	}
	col := 1
	if p, what, ok := preciseSyntaxError(data); ok && !strings.Contains(msg, "tab") {
		// yaml.v3 names the line where the enclosing block starts (an
		// indentation slip on line 4 came out at line 2); goccy/go-yaml's
		// parser points at the token, and says what is wrong there.
		line, col = p.line, p.col
		msg = what + " (" + msg + ")"
	}
	if strings.Contains(msg, "tab") {
		// yaml.v3 reports the line where the enclosing block starts; point
		// at the first line from there on that is indented with a tab.
		lines := bytes.Split(data, []byte("\n"))
		for i := line - 1; i < len(lines); i++ {
			l := lines[i]
			indent := l[:len(l)-len(bytes.TrimLeft(l, " \t"))]
			if t := bytes.IndexByte(indent, '\t'); t >= 0 {
				line, col = i+1, t+1
				msg += " (indent with spaces, not tabs)"
				break
			}
		}
	}
	d.errorAt(pos{line, col}, "", "invalid YAML: %s", msg)
}

// preciseSyntaxError parses data with goccy/go-yaml only to place a syntax
// error yaml.v3 found: the line and column of the token at fault, and
// goccy's message. ok is false if goccy finds no error or cannot say where.
func preciseSyntaxError(data []byte) (p pos, msg string, ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	_, err := goccyparser.ParseBytes(data, 0)
	var se *goccy.SyntaxError
	if !errors.As(err, &se) || se.Token == nil || se.Token.Position == nil || se.Token.Position.Line < 1 {
		return pos{}, "", false
	}
	return pos{se.Token.Position.Line, max(se.Token.Position.Column, 1)}, se.Message, true
}

// resolve follows an alias to the node it names.
func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func joinPath(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// decodeFile decodes the top-level node into f. It returns false when
// the result is not worth validating: the top level is not a mapping, or
// the alias budget ran out.
func (d *decoder) decodeFile(root *yaml.Node, f *File) bool {
	if root == nil {
		return true
	}
	d.pos[""] = nodePos(root)
	d.maxVisits = aliasFactor*d.nodes + aliasSlack
	if r := resolve(root); r.Kind != yaml.MappingNode && !isNull(r) {
		d.errorf(r, "", "the top level must be a mapping (version:, regions:, links:, routes:), got %s", describe(r))
		return false
	}
	d.decode(root, reflect.ValueOf(f).Elem(), "")
	return !d.exhausted
}

// decode stores n into v, which must be settable. On a mismatch it
// records an error and leaves v as it was (zero).
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	n = resolve(n)
	if d.visits++; d.visits > d.maxVisits {
		if !d.exhausted {
			d.exhausted = true
			d.errorf(n, path, "file too complex: YAML aliases expand it to more than %d values", d.maxVisits)
		}
		return
	}
	if isNull(n) {
		return // "key:", "key: ~" and "key: null" leave the zero value
	}
	switch v.Kind() {
	case reflect.Pointer:
		nv := reflect.New(v.Type().Elem())
		d.decode(n, nv.Elem(), path)
		v.Set(nv)
	case reflect.Struct:
		d.decodeStruct(n, v, path)
	case reflect.Slice:
		d.decodeSlice(n, v, path)
	case reflect.Map:
		d.decodeMap(n, v, path)
	default:
		d.decodeScalar(n, v, path)
	}
}

func (d *decoder) mismatch(n *yaml.Node, t reflect.Type, path string) {
	d.bad[path] = true
	d.errorf(n, path, "expected %s, got %s", want(t), describe(n))
}

// shorthander is a struct that may be written as one scalar, which sets
// the field it names (see Admin).
type shorthander interface{ shorthand() string }

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if sh, ok := v.Addr().Interface().(shorthander); ok && n.Kind == yaml.ScalarNode {
		name := sh.shorthand()
		p := joinPath(path, name)
		d.pos[p] = nodePos(n)
		d.decode(n, v.Field(structFields(v.Type())[name]), p)
		return
	}
	if n.Kind != yaml.MappingNode {
		d.mismatch(n, v.Type(), path)
		return
	}
	fields := structFields(v.Type())
	for _, e := range d.entries(n, path, nil) {
		name := e.key.Value
		i, ok := fields[name]
		p := joinPath(path, name)
		if !ok {
			d.errorf(e.key, p, "unknown field %q %s", name, suggest(name, v.Type()))
			continue
		}
		d.pos[p] = valuePos(e)
		d.decode(e.value, v.Field(i), p)
	}
}

func (d *decoder) decodeSlice(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.SequenceNode {
		d.mismatch(n, v.Type(), path)
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, el := range n.Content {
		p := fmt.Sprintf("%s[%d]", path, i)
		d.pos[p] = nodePos(el)
		d.decode(el, s.Index(i), p)
	}
	v.Set(s)
}

func (d *decoder) decodeMap(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.mismatch(n, v.Type(), path)
		return
	}
	m := reflect.MakeMap(v.Type())
	for _, e := range d.entries(n, path, nil) {
		p := joinPath(path, e.key.Value)
		d.pos[p] = valuePos(e)
		ev := reflect.New(v.Type().Elem()).Elem()
		d.decode(e.value, ev, p)
		m.SetMapIndex(reflect.ValueOf(e.key.Value).Convert(v.Type().Key()), ev)
	}
	v.Set(m)
}

func (d *decoder) decodeScalar(n *yaml.Node, v reflect.Value, path string) {
	if reasons := d.envErrs[n]; len(reasons) > 0 {
		d.bad[path] = true
		if !d.envDone[n] {
			d.envDone[n] = true
			for _, r := range reasons {
				d.errorf(n, path, "%s", r)
			}
		}
		return
	}
	if n.Kind != yaml.ScalarNode {
		d.mismatch(n, v.Type(), path)
		return
	}
	if names := d.unsetEnv[n]; len(names) > 0 && !d.envDone[n] {
		d.envDone[n] = true
		for _, name := range names {
			p := nodePos(n)
			d.warns = append(d.warns, &Error{File: d.file, Line: max(p.line, 1), Col: max(p.col, 1), Path: path,
				Reason: fmt.Sprintf("environment variable %s is not set: meridian run refuses the file without it (validate --require-env makes this an error)", name)})
		}
	}
	if d.expanded[n] {
		d.fromEnv[path] = true
	} else {
		d.keepExpr(path, n)
	}
	nv := reflect.New(v.Type())
	// Quantities (BitRate, ByteSize) parse themselves, in the grammar of
	// package internal/units, and their message says what is wrong.
	if u, ok := nv.Interface().(encoding.TextUnmarshaler); ok {
		if err := u.UnmarshalText([]byte(n.Value)); err != nil {
			d.bad[path] = true
			d.errorf(n, path, "%v", err)
			return
		}
		v.Set(nv.Elem())
		return
	}
	if v.Type() == durationType {
		dur, err := units.ParseDuration(n.Value)
		if err != nil {
			d.mismatch(n, v.Type(), path)
			return
		}
		v.SetInt(int64(dur))
		return
	}
	if err := decodeScalarNode(n, nv.Interface()); err != nil {
		d.mismatch(n, v.Type(), path)
		return
	}
	v.Set(nv.Elem())
}

// decodeScalarNode lets yaml.v3 convert a scalar (int, bool, string). Its messages name Go types, so callers
// replace them with their own.
func decodeScalarNode(n *yaml.Node, out any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("yaml: %v", r)
		}
	}()
	return n.Decode(out)
}

// entry is one key/value pair of a mapping, after merges.
type entry struct{ key, value *yaml.Node }

// valuePos is where a field's value is written, so that errors point at
// the text to fix; for an empty value ("listen:") that is the key.
func valuePos(e entry) pos {
	if v := resolve(e.value); v.Kind == yaml.ScalarNode && v.Value == "" && isNull(v) {
		return nodePos(e.key)
	}
	return nodePos(e.value)
}

// entries lists the pairs of mapping n, reporting non-string and
// duplicate keys. It applies YAML merge keys ("<<: *defaults"): merged
// pairs come after the mapping's own and never override them. merging
// holds the mappings being merged, to stop "&a {<<: *a}" from looping.
func (d *decoder) entries(n *yaml.Node, path string, merging []*yaml.Node) []entry {
	var own, merged []entry
	first := make(map[string]*yaml.Node)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := resolve(n.Content[i]), n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			merged = append(merged, d.merge(k, resolve(val), path, append(merging[:len(merging):len(merging)], n))...)
			continue
		}
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, path, "mapping keys must be plain strings, got %s", describe(k))
			continue
		}
		if prev, dup := first[k.Value]; dup {
			d.errorf(k, joinPath(path, k.Value), "duplicate key %q (first at line %d); remove one", k.Value, prev.Line)
			continue
		}
		first[k.Value] = k
		own = append(own, entry{k, val})
	}
	for _, e := range merged {
		if _, dup := first[e.key.Value]; !dup {
			first[e.key.Value] = e.key
			own = append(own, e)
		}
	}
	return own
}

// merge returns the pairs a merge key's value contributes: one mapping,
// or a list of mappings where earlier ones win.
func (d *decoder) merge(key, val *yaml.Node, path string, merging []*yaml.Node) []entry {
	var maps []*yaml.Node
	switch val.Kind {
	case yaml.MappingNode:
		maps = []*yaml.Node{val}
	case yaml.SequenceNode:
		for _, m := range val.Content {
			maps = append(maps, resolve(m))
		}
	}
	var out []entry
	for _, m := range maps {
		if m.Kind != yaml.MappingNode {
			d.errorf(key, path, "merge key \"<<\" needs a mapping or a list of mappings, got %s", describe(m))
			continue
		}
		if slices.Contains(merging, m) {
			d.errorf(key, path, "merge key \"<<\" merges a mapping into itself")
			continue
		}
		if d.visits++; d.visits > d.maxVisits {
			return out
		}
		out = append(out, d.entries(m, path, merging)...)
	}
	return out
}

// structFields maps yaml names to field indexes.
func structFields(t reflect.Type) map[string]int {
	m := make(map[string]int, t.NumField())
	for i := range t.NumField() {
		if name := yamlName(t.Field(i)); name != "" {
			m[name] = i
		}
	}
	return m
}

func yamlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" || !f.IsExported() {
		return ""
	}
	return name
}

// suggest names the field the user probably meant, or lists them all.
func suggest(name string, t reflect.Type) string {
	var names []string
	for i := range t.NumField() {
		if n := yamlName(t.Field(i)); n != "" {
			names = append(names, n)
		}
	}
	if c := closest(name, names); c != "" {
		return fmt.Sprintf("(did you mean %q?)", c)
	}
	return "(expected one of: " + strings.Join(names, ", ") + ")"
}

// closest returns the option name most likely meant, or "": one that
// differs only in case, "_" and "-", or by at most two edits.
func closest(name string, options []string) string {
	norm := func(s string) string {
		return strings.NewReplacer("_", "", "-", "").Replace(strings.ToLower(s))
	}
	for _, o := range options {
		if norm(o) == norm(name) || len(name) >= 4 && editDistance(o, name) <= 2 {
			return o
		}
	}
	return ""
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	bitRateType  = reflect.TypeFor[BitRate]()
	byteSizeType = reflect.TypeFor[ByteSize]()
)

// want describes what a Go type expects, for error messages.
func want(t reflect.Type) string {
	switch t {
	case durationType:
		return `a duration such as "2s" or "500ms"`
	case bitRateType:
		return `a bit rate such as "10Mbit"`
	case byteSizeType:
		return `a byte size such as "64MiB"`
	}
	switch t.Kind() {
	case reflect.Pointer:
		return want(t.Elem())
	case reflect.Struct, reflect.Map:
		return "a mapping"
	case reflect.Slice:
		return "a list"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	}
	return t.String()
}

// describe says what a node holds, for error messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
	default:
		return "an empty value"
	}
	v := n.Value
	if len(v) > 40 {
		v = v[:37] + "..."
	}
	word := map[string]string{"!!str": "string", "!!int": "integer", "!!float": "number", "!!bool": "boolean"}
	tag := n.ShortTag()
	w, known := word[tag]
	switch {
	case tag == "!!null":
		return "an empty value"
	case !known:
		return fmt.Sprintf("value %q tagged %q", v, tag)
	case tag == "!!str" || !utf8.ValidString(v) || strings.ContainsFunc(v, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }):
		return fmt.Sprintf("%s %q", w, v)
	default:
		return w + " " + v
	}
}
