package evals_test

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/toolgate/toolgate/evals"
)

// FuzzReadTraces feeds the trace reader arbitrary JSONL. It must not
// panic; a refusal names the file (and, for a bad line, the line); a
// trace it returns passes Validate and its calls can be turned into replay
// calls. Seeds: the first lines of the project's scenario corpus,
// testdata/fuzz/FuzzReadTraces and the cases below.
func FuzzReadTraces(f *testing.F) {
	if fh, err := os.Open("scenarios/scenarios.jsonl"); err == nil {
		sc := bufio.NewScanner(fh)
		sc.Buffer(nil, 1<<20)
		for i := 0; i < 8 && sc.Scan(); i++ {
			f.Add(append([]byte(nil), sc.Bytes()...))
		}
		fh.Close()
	}
	for _, s := range []string{
		`{"id":"a","suite":"demo","label":"benign","calls":[{"tool":"read_file","args":{"path":"x"},"result":"ok"}]}`,
		`{"id":"a","suite":"demo","label":"attack","harmful_call_index":0,"calls":[{"tool":"send","args":{}}]}`,
		`{"id":"a","suite":"demo","label":"attack","harmful_call_index":5,"calls":[]}`,
		`{"id":"a","suite":"demo","label":"attack","harmful_call_index":-1,"calls":[]}`,
		`{"id":"a","suite":"demo","label":"benign","calls":[{"tool":"t","args":[1]}]}`,
		`{"id":"a","suite":"demo","label":"benign","calls":[{"tool":"t","result":[{"type":"text","text":"x"}]}]}`,
		`{"id":"a","suite":"demo","label":"benign","calls":[{"tool":"t","result":{"content":[{"type":"text"}]}}]}`,
		"{\"id\":\"a\",\"suite\":\"demo\",\"label\":\"benign\"}\n{\"id\":\"a\",\"suite\":\"demo\",\"label\":\"benign\"}",
		`{"id":"a","suite":"demo","label":"benign","harmful_call_index":1e999}`,
		`{"id":"\ud800","suite":"demo","label":"benign"}`,
		"\n\n   \n",
		`[]`,
		`{"id":`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "traces.jsonl")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		traces, err := evals.ReadTraces(path)
		if err != nil {
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("ReadTraces(%q) error %q does not name the file", data, err)
			}
			return
		}
		nonBlank := 0
		for _, line := range bytes.Split(data, []byte("\n")) {
			if len(bytes.TrimSpace(line)) > 0 {
				nonBlank++
			}
		}
		if len(traces) != nonBlank {
			t.Fatalf("ReadTraces(%q) returned %d traces from %d non-blank lines", data, len(traces), nonBlank)
		}
		for i := range traces {
			tr := &traces[i]
			if err := tr.Validate(); err != nil {
				t.Fatalf("ReadTraces(%q) returned trace %d that fails Validate: %v", data, i, err)
			}
			_ = tr.Harmful()
			_ = tr.Agent()
			for _, c := range tr.Calls {
				_ = c.Replay()
			}
		}
	})
}
