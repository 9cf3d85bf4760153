package policies

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestExamplePacks runs the tests of each example pack, each pack on its
// own as a deployment would load it.
func TestExamplePacks(t *testing.T) {
	entries, err := os.ReadDir("../examples/policies")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join("../examples/policies", e.Name())
		t.Run(e.Name(), func(t *testing.T) {
			var out bytes.Buffer
			ok, err := RunTests([]string{dir}, &out, TestOptions{})
			if err != nil {
				t.Fatalf("RunTests(%s): %v\n%s", dir, err, out.String())
			}
			if !ok {
				t.Errorf("RunTests(%s) failed:\n%s", dir, out.String())
			}
			t.Logf("\n%s", out.String())
		})
	}
}
