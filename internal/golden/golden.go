// Package golden compares test output with golden files kept under a
// package's testdata/, and rewrites them when the test binary runs with
// -update (then read the diff before committing). Config errors, routing
// tables and validate output all use it, so the three keep one habit.
// Only tests import it.
package golden

import (
	"flag"
	"os"
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
