// Package golden compares test output with golden files kept under a
// package's testdata/, and rewrites them when the test binary runs with
// -update (then read the diff before committing). Config errors, routing
// tables and validate output all use it, so the three keep one habit.
// Only tests import it.
package golden

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files from the current output")

// Check compares got with the file at path, or writes got there under
// -update. A missing file or a difference fails t, naming the file.
func Check(t testing.TB, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (run with -update to accept it)\n--- got:\n%s--- want:\n%s", path, got, want)
	}
}

// Inputs returns the contents of the files matching the glob patterns (the
// inputs beside golden files, examples), for seeding fuzz targets with
// them. No file at all fails tb.
func Inputs(tb testing.TB, patterns ...string) [][]byte {
	tb.Helper()
	var out [][]byte
	for _, pattern := range patterns {
		paths, err := filepath.Glob(pattern)
		if err != nil {
			tb.Fatalf("glob %s: %v", pattern, err)
		}
		for _, path := range paths {
			data, err := os.ReadFile(path)
			if err != nil {
				tb.Fatal(err)
			}
			out = append(out, data)
		}
	}
	if len(out) == 0 {
		tb.Fatalf("no files match %v", patterns)
	}
	return out
}
