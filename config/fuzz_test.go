package config

import (
	"errors"
	"testing"

	"github.com/meridian-gw/meridian/internal/alloctest"
	"github.com/meridian-gw/meridian/internal/golden"
)

// FuzzParse checks that no input makes Parse panic, and that failures are
// always Errors with real positions.
func FuzzParse(f *testing.F) {
	for _, data := range golden.Inputs(f, "testdata/*/*.yaml", "../examples/*.yaml") {
		f.Add(data)
	}
	f.Add([]byte("a: &a {<<: *a}"))
	f.Add([]byte("regions: &r [*r]"))
	f.Add([]byte("version: 1\n---\n---\nx: 1\n"))

	f.Fuzz(func(t *testing.T, data []byte) {
		var file *File
		var err error
		// YAML nodes cost some hundred bytes each, and errors quote. The
		// base covers a file's fixed costs: a CEL environment for its
		// filters and the destination-collision search (the fleet example,
		// with filters and gossip, took 7.1 MB under -race against 7.0).
		alloctest.Check(t, "Parse", uint64(6<<20+2048*len(data)), func() { file, err = Parse("fuzz.yaml", data) })
		if err == nil {
			if file == nil {
				t.Fatal("nil *File and nil error")
			}
			if errs := validate(file, "fuzz.yaml", nil, nil, nil); len(errs) > 0 {
				t.Fatalf("a parsed file does not validate again: %v", errs)
			}
			return
		}
		if file != nil {
			t.Fatal("*File returned with an error")
		}
		var errs Errors
		if !errors.As(err, &errs) {
			t.Fatalf("error is %T, want Errors: %v", err, err)
		}
		checkErrors(t, errs)
	})
}
