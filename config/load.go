package config

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/meridian-gw/meridian/internal/redact"
)

// Load reads and checks the topology file at path. Relative TLS file paths
// in it are taken relative to the file's directory. Problems with the
// file's contents are returned as [Errors], each naming path, line and
// column; failing to read the file is returned wrapped ("load config: …").
func Load(path string) (*File, error) { return LoadWith(path, Options{}) }

// Options change how a file is loaded. The zero value is what a gateway
// needs.
type Options struct {
	// UnsetEnvWarns makes an unset ${NAME} a warning instead of an error:
	// the value is then the text "${NAME}" itself. For validating files
	// where their secrets are not (a CI job); never for running them.
	UnsetEnvWarns bool
	// LookupEnv, if not nil, gives the values of ${NAME} instead of the
	// process environment (the in-process fleet of `meridian demo
	// --topology` generates them).
	LookupEnv func(name string) (string, bool)
}

// LoadWith is Load with options.
func LoadWith(path string, o Options) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	lookup := o.LookupEnv
	if lookup == nil {
		lookup = os.LookupEnv
	}
	f, errs := parseWith(path, data, lookup, o)
	if len(errs) > 0 {
		return nil, errs
	}
	resolvePaths(f, filepath.Dir(path))
	return f, nil
}

// resolvePaths makes relative TLS file paths relative to dir, the topology
// file's directory, so a gateway finds its certificates whatever its
// working directory.
func resolvePaths(f *File, dir string) {
	fix := func(t *TLS) {
		if t == nil {
			return
		}
		for _, p := range []*string{&t.CAFile, &t.CertFile, &t.KeyFile} {
			if *p != "" && !filepath.IsAbs(*p) {
				*p = filepath.Join(dir, *p)
			}
		}
	}
	if f.TLS != nil && f.TLS.CRL != "" && !filepath.IsAbs(f.TLS.CRL) {
		f.TLS.CRL = filepath.Join(dir, f.TLS.CRL)
	}
	for i := range f.Links {
		if a := f.Links[i].AMQP; a != nil {
			fix(a.TLS)
		}
	}
	for i := range f.Regions {
		for j := range f.Regions[i].Clusters {
			fix(f.Regions[i].Clusters[j].TLS)
		}
		for j := range f.Regions[i].Gateways {
			fix(f.Regions[i].Gateways[j].TLS)
		}
	}
}

// Parse decodes, expands ${ENV} in, fills defaults into and validates a
// topology file. name is used in error messages only. On failure the error
// is [Errors] holding every problem found, sorted by position, and the
// *File is nil.
func Parse(name string, data []byte) (*File, error) {
	f, errs := parse(name, data, os.LookupEnv)
	if len(errs) > 0 {
		return nil, errs
	}
	return f, nil
}

// parse is Parse with the environment passed in.
func parse(name string, data []byte, lookupEnv func(string) (string, bool)) (*File, Errors) {
	return parseWith(name, data, lookupEnv, Options{})
}

func parseWith(name string, data []byte, lookupEnv func(string) (string, bool), o Options) (*File, Errors) {
	d := newDecoder(name)
	d.envOptional = o.UnsetEnvWarns
	root, ok := d.parseYAML(data)
	if !ok {
		return nil, d.errs.sorted()
	}
	d.expandEnv(root, lookupEnv)
	secrets := redact.New(d.secrets...)
	f := new(File)
	if !d.decodeFile(root, f) {
		return nil, redactErrors(secrets, d.errs.sorted())
	}
	applyDefaults(f)
	errs := append(d.errs, validate(f, name, d.pos, d.bad, &d.exprs)...)
	errs = append(errs, d.literalSecrets(f)...)
	if len(errs) > 0 {
		return nil, redactErrors(secrets, errs.sorted())
	}
	ws := append(d.warns, warnings(f, name, d.pos)...)
	f.src = &source{name: name, pos: d.pos, warnings: redactErrors(secrets, ws.sorted()), secrets: d.secrets}
	return f, nil
}

// literalSecrets reports admin tokens written in the file itself instead
// of coming from ${ENV}: a topology file is shared and checked in.
func (d *decoder) literalSecrets(f *File) Errors {
	var errs Errors
	for i, r := range f.Regions {
		for j, g := range r.Gateways {
			p := fmt.Sprintf("regions[%d].gateways[%d].admin.token", i, j)
			if g.Admin != nil && g.Admin.Token != "" && !d.fromEnv[p] && !d.bad[p] {
				errs = append(errs, &Error{File: d.file, Line: lookupPos(d.pos, p).line, Col: lookupPos(d.pos, p).col, Path: p,
					Reason: "written in the file; write it as ${ENV} (e.g. token: ${MERIDIAN_ADMIN_TOKEN}) so the file holds no secret"})
			}
		}
	}
	return errs
}

// redactErrors replaces values that came from ${ENV} in the reasons of
// errs: an error message quotes the value it rejects, and that value may
// be a password.
func redactErrors(secrets *redact.Set, errs Errors) Errors {
	for _, e := range errs {
		e.Reason = secrets.String(e.Reason)
	}
	return errs
}

// Secrets returns every value in the file that came from ${ENV} expansion
// (nil for a File built in code). They are secret by rule: the CLI, the
// logs, the admin API and error messages replace them with [redacted]
// (package internal/redact), whatever setting they were written in.
func (f *File) Secrets() []string {
	if f == nil || f.src == nil {
		return nil
	}
	return slices.Clone(f.src.secrets)
}
