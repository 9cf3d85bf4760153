package policies_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/toolgate/toolgate/policies"
)

// FuzzCompileFile feeds the policy loader arbitrary file contents. It must
// not panic; it either returns a usable set or a *LoadError whose every
// problem names the file and says what is wrong. A set that compiled must
// decide a call without panicking, within its cost budget.
// Seeds: every example policy file, testdata/fuzz/FuzzCompileFile and the
// cases below.
func FuzzCompileFile(f *testing.F) {
	paths, _ := filepath.Glob("../examples/policies/*.yaml")
	more, _ := filepath.Glob("../examples/policies/*/*.yaml")
	for _, p := range append(paths, more...) {
		if strings.HasSuffix(p, "_test.yaml") {
			continue
		}
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	for _, s := range []string{
		"rules:\n  - id: a\n    action: deny\n",
		"rules:\n  - id: a\n    when: call.args.x\n    action: deny\n",
		"rules:\n  - id: a\n    when: '1 +'\n    action: deny\n",
		"rules:\n  - id: a\n    when: [1]\n    action: deny\n",
		"rules:\n  - id: a\n    action: deny\n    bogus: 1\n",
		"rules:\n  - id: a\n    action: deny\n  - id: a\n    action: allow\n",
		"a: &a [*a]\n",
		"rules: &r\n  - *r\n",
		"rules:\n  - id: a\n    when: '" + strings.Repeat("(", 300) + "true" + strings.Repeat(")", 300) + "'\n    action: deny\n",
		"rules:\n  - id: a\n    when: 'call.args.s.matches(\"(\")'\n    action: deny\n",
		"rules:\n  - id: a\n    when: 'duration(\"1x\") > duration(\"1s\")'\n    action: deny\n",
		"---\nrules: []\n---\nrules: []\n",
		"\xff\xfe",
	} {
		f.Add([]byte(s))
	}
	now := time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, data []byte) {
		set, err := policies.Compile([]policies.SourceFile{{Name: "fuzz.yaml", Data: data}}, policies.Options{})
		if err != nil {
			checkLoadError(t, data, err)
			return
		}
		set.Decide(&policies.Input{
			Call: policies.Call{Server: "demo", Tool: "run_shell", Name: "demo__run_shell",
				Args: []byte(`{"command":"rm -rf /","url":"https://example.com","n":1}`), Labels: []string{"external_send"}},
			History: []policies.HistoryEntry{{Name: "demo__read_secret", Decision: "allow", Time: now.Add(-time.Minute), Labels: []string{"credential"}}},
			Now:     now,
		})
	})
}

// FuzzCompileExpression puts arbitrary CEL source into one rule's when.
// Compile must report a bad expression as a problem at that rule's when,
// never panic, and a compiled expression must evaluate without panicking.
func FuzzCompileExpression(f *testing.F) {
	for _, s := range []string{
		`call.name == "demo__read_file"`,
		`history.exists(h, "credential" in h.labels)`,
		`history.sequence(["*__read_secret"])`,
		`call.args.command.matches("(?i)rm\\s+-rf")`,
		`size(call.args) > 2`,
		`[1,2,3].map(x, [x, x, x]).map(y, [y, y, y]).size() > 0`,
		`"a" + 1`,
		`1`,
		`call.args.x.y.z.w`,
		`duration("1h") > duration("30m")`,
		`timestamp("2026-01-01T00:00:00Z") < now`,
		`dyn(1) == dyn("1")`,
		`9223372036854775807 + 1 > 0`,
		`double("NaN") == double("NaN")`,
		strings.Repeat("!", 500) + "true",
	} {
		f.Add(s)
	}
	now := time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, expr string) {
		// A literal block keeps the expression byte for byte, whatever it holds.
		var b strings.Builder
		b.WriteString("rules:\n  - id: fuzz\n    action: deny\n    when: |-\n")
		for _, line := range strings.Split(expr, "\n") {
			b.WriteString("      ")
			b.WriteString(line)
			b.WriteByte('\n')
		}
		data := []byte(b.String())
		set, err := policies.Compile([]policies.SourceFile{{Name: "fuzz.yaml", Data: data}}, policies.Options{})
		if err != nil {
			checkLoadError(t, data, err)
			return
		}
		set.Decide(&policies.Input{
			Call: policies.Call{Server: "demo", Tool: "read_file", Name: "demo__read_file",
				Args: []byte(`{"path":"/etc/passwd","x":{"y":{"z":{"w":true}}},"command":"ls"}`)},
			History: []policies.HistoryEntry{{Name: "demo__read_secret", Decision: "allow", Time: now.Add(-time.Minute), Labels: []string{"credential"}}},
			Now:     now,
		})
	})
}

func checkLoadError(t *testing.T, data []byte, err error) {
	t.Helper()
	var le *policies.LoadError
	if !errors.As(err, &le) {
		t.Fatalf("Compile(%q) error %T %v; want a *policies.LoadError", data, err, err)
	}
	if len(le.Problems) == 0 {
		t.Fatalf("Compile(%q) returned a LoadError with no problems", data)
	}
	for _, p := range le.Problems {
		if p.File != "fuzz.yaml" || strings.TrimSpace(p.Message) == "" {
			t.Fatalf("Compile(%q) problem %+v; want the file name and a message", data, p)
		}
	}
}
