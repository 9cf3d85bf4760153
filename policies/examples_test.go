package policies

import (
	"bytes"
	"testing"
)

// TestExamplePack runs the example pack's own tests.
func TestExamplePack(t *testing.T) {
	var out bytes.Buffer
	ok, err := RunTests([]string{"../examples/policies"}, &out, TestOptions{})
	if err != nil {
		t.Fatalf("RunTests: %v\n%s", err, out.String())
	}
	if !ok {
		t.Errorf("RunTests(examples) failed:\n%s", out.String())
	}
	t.Logf("\n%s", out.String())
}
