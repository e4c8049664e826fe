package config

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/meridian-gw/meridian/internal/golden"
)

// testEnv is the environment the testdata files see.
var testEnv = map[string]string{
	"MERIDIAN_TEST_PASSWORD":     "s3cret",
	"MERIDIAN_TEST_EMPTY":        "",
	"MERIDIAN_HQ_KAFKA_PASSWORD": "hq-s3cret",
	"MERIDIAN_DR_KAFKA_PASSWORD": "dr-s3cret",
}

func lookupTestEnv(name string) (string, bool) {
	v, ok := testEnv[name]
	return v, ok
}

// TestBadFiles parses every testdata/bad/*.yaml and compares the error
// output with the .golden file next to it. Run with -update to rewrite the
// golden files, then read the diff: each message must make sense to
// someone fixing the file at 3am.
func TestBadFiles(t *testing.T) {
	files, err := filepath.Glob("testdata/bad/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 20 {
		t.Fatalf("found %d bad files, want at least 20", len(files))
	}
	for _, path := range files {
		name := strings.TrimSuffix(filepath.Base(path), ".yaml")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			f, errs := parse(filepath.Base(path), data, lookupTestEnv)
			if len(errs) == 0 {
				t.Fatalf("parsed without error: %+v", f)
			}
			if f != nil {
				t.Errorf("got a *File along with errors")
			}
			checkErrors(t, errs)
			got := errs.Error() + "\n"
			goldenPath := strings.TrimSuffix(path, ".yaml") + ".golden"
			golden.Check(t, goldenPath, got)
		})
	}
}

// checkErrors checks the invariants every Errors value keeps.
func checkErrors(t testing.TB, errs Errors) {
	t.Helper()
	if len(errs) == 0 {
		t.Fatalf("empty Errors")
	}
	for _, e := range errs {
		if e == nil {
			t.Fatalf("nil *Error in %v", errs)
		}
		if e.Line < 1 || e.Col < 1 {
			t.Errorf("%q: position %d:%d, want both >= 1", e.Error(), e.Line, e.Col)
		}
		if e.Reason == "" {
			t.Errorf("%q: empty reason", e.Error())
		}
		if strings.Contains(e.Reason, "\n") {
			t.Errorf("%q: reason spans lines", e.Error())
		}
	}
	if !slices.IsSortedFunc(errs, func(a, b *Error) int {
		if a.Line != b.Line {
			return a.Line - b.Line
		}
		return a.Col - b.Col
	}) {
		t.Errorf("errors not sorted by position:\n%v", errs)
	}
}

func TestParseReturnsErrors(t *testing.T) {
	data, err := os.ReadFile("testdata/bad/several-errors.yaml")
	if err != nil {
		t.Fatal(err)
	}
	f, err := Parse("topology.yaml", data)
	if f != nil || err == nil {
		t.Fatalf("Parse = %v, %v; want nil, error", f, err)
	}
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("errors.As(%T, *Errors) = false", err)
	}
	if got := strings.Count(err.Error(), "\n") + 1; got != len(errs) {
		t.Errorf("Error() has %d lines, want one per problem (%d)", got, len(errs))
	}
	var one *Error
	if !errors.As(err, &one) {
		t.Fatalf("errors.As(%T, **Error) = false", err)
	}
	if one != errs[0] {
		t.Errorf("errors.As found %v, want the first problem %v", one, errs[0])
	}
	if !strings.HasPrefix(err.Error(), "topology.yaml:") {
		t.Errorf("error does not start with the file name: %q", err.Error())
	}
}
