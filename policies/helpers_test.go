package policies

import (
	"errors"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC) // a Monday

func mustCompile(t testing.TB, yaml string) *Set {
	t.Helper()
	set, err := Compile([]SourceFile{{Name: "test.yaml", Data: []byte(yaml)}}, Options{})
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return set
}

func compileProblems(t *testing.T, yaml string) []Problem {
	t.Helper()
	_, err := Compile([]SourceFile{{Name: "p.yaml", Data: []byte(yaml)}}, Options{})
	var le *LoadError
	if !errors.As(err, &le) {
		t.Fatalf("Compile error = %v; want a *LoadError", err)
	}
	return le.Problems
}

func call(name string, args string, labels ...string) Call {
	server, tool := splitName(name)
	return Call{Server: server, Tool: tool, Name: name, Method: "tools/call", Args: []byte(args), Labels: labels}
}
