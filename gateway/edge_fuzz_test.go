package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzEdgeMessage feeds the JSON-RPC edge arbitrary bodies. Whatever comes
// in, checkMessage must not panic; a message it accepts must be one JSON
// object that encoding/json reads, nested no deeper than the limit, with no
// duplicate or case-variant keys anywhere; a message it refuses gets a
// JSON-RPC error code and a message that says what was wrong.
// Seeds: testdata/fuzz/FuzzEdgeMessage and the cases below.
func FuzzEdgeMessage(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"demo__read_file","arguments":{"path":"a.txt"}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","Name":"b"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","na\u006de":"b"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{"K":1,"\u212a":2}}}`,
		`{"jsonrpc":"2.0","id":1e400,"method":"ping"}`,
		`{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"ping"}`,
		`{"jsonrpc":"2.0","id":1,"method":"ping","params":{"n":-0.0e-99999}}`,
		"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\"}",
		`{"jsonrpc":"2.0","id":"\ud800","method":"ping"}`,
		strings.Repeat(`{"a":`, 70) + "1" + strings.Repeat("}", 70),
		strings.Repeat(`[`, 70) + strings.Repeat("]", 70),
		`[{"jsonrpc":"2.0","id":1,"method":"ping"}]`,
		`{"jsonrpc":"2.0","id":3,"result":{}}`,
		`{"jsonrpc":"2.0","id":null,"method":"ping"}`,
		`{"jsonrpc":"2.0","method":"ping","params":7}`,
		`{"jsonrpc":"2.0","id":1,"method":"ping"} {}`,
		``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		msg, e := checkMessage(body, DefaultMaxDepth)
		if e != nil {
			if e.msg == "" || (e.code != codeParseError && e.code != codeInvalidRequest) || e.status != http.StatusBadRequest {
				t.Fatalf("checkMessage(%q) refused with %d/%d %q; want 400, a JSON-RPC error code and a message", body, e.status, e.code, e.msg)
			}
			if e.id != nil && !validID(e.id) {
				t.Fatalf("checkMessage(%q) answers with id %s, which is not a valid id", body, e.id)
			}
			return
		}
		if !utf8.Valid(body) || !json.Valid(body) {
			t.Fatalf("checkMessage(%q) accepted a body that is not valid UTF-8 JSON", body)
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(body, &obj); err != nil {
			t.Fatalf("checkMessage(%q) accepted a body that is not one object: %v", body, err)
		}
		if depth, err := keysDistinct(body); err != nil {
			t.Fatalf("checkMessage(%q) accepted it: %v", body, err)
		} else if depth > DefaultMaxDepth {
			t.Fatalf("checkMessage(%q) accepted nesting %d; limit %d", body, depth, DefaultMaxDepth)
		}
		if _, isCall := obj["method"]; isCall && msg.method == "" {
			t.Fatalf("checkMessage(%q) accepted a request with an empty method", body)
		}
	})
}

// keysDistinct walks body with encoding/json's tokenizer, an implementation
// independent of the checker, and reports the deepest nesting and the first
// object with two keys that are equal under case folding.
func keysDistinct(body []byte) (int, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber() // numbers beyond float64 are valid JSON and are forwarded as they are
	type frame struct {
		obj    bool
		keys   []string
		expect bool // the next string token is a key
	}
	var stack []*frame
	deepest := 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return deepest, nil
		}
		if err != nil {
			return deepest, err
		}
		top := func() *frame {
			if len(stack) == 0 {
				return nil
			}
			return stack[len(stack)-1]
		}
		if key, isStr := tok.(string); isStr && top() != nil && top().obj && top().expect {
			fr := top()
			for _, k := range fr.keys {
				if strings.EqualFold(k, key) {
					return deepest, fmt.Errorf("keys %q and %q are equal under case folding", k, key)
				}
			}
			fr.keys = append(fr.keys, key)
			fr.expect = false
			continue
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			stack = append(stack, &frame{obj: tok == json.Delim('{'), expect: tok == json.Delim('{')})
			deepest = max(deepest, len(stack))
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		if fr := top(); fr != nil && fr.obj {
			fr.expect = true
		}
	}
}

// TestCheckMessageManyKeys: one object with very many keys costs time
// linear in its size. With a pairwise key check a 4 MiB body of short keys
// took minutes of CPU; now it is refused or accepted in one pass. The
// case-variant key at the very end must still be found.
func TestCheckMessageManyKeys(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{`)
	const n = 300_000 // about 3.6 MB, under DefaultMaxBodyBytes
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, `"k%d":0,`, i)
	}
	ok := b.String() + `"last":0}}}`
	dup := b.String() + `"K17":0}}}`
	if len(dup) > DefaultMaxBodyBytes {
		t.Fatalf("test body is %d bytes, over the %d limit", len(dup), DefaultMaxBodyBytes)
	}
	if _, e := checkMessage([]byte(ok), DefaultMaxDepth); e != nil {
		t.Fatalf("checkMessage(%d distinct keys) = %v; want accepted", n+1, e)
	}
	_, e := checkMessage([]byte(dup), DefaultMaxDepth)
	if e == nil || !strings.Contains(e.msg, `"k17" and "K17" differ only in case`) {
		t.Fatalf("checkMessage(%d keys ending in K17) = %v; want a case-variant refusal naming k17 and K17", n+1, e)
	}
}

func TestFoldKey(t *testing.T) {
	tests := []struct {
		a, b string
	}{
		{"name", "NAME"},
		{"k", "\u212a"}, // Kelvin sign folds to k
		{"straße", "STRASSE"},
		{"σ", "ς"},
		{"ǅ", "ǆ"},
		{"abc", "abd"},
		{"", ""},
	}
	for _, tt := range tests {
		t.Run(tt.a+"/"+tt.b, func(t *testing.T) {
			want := strings.EqualFold(tt.a, tt.b)
			if got := foldKey(tt.a) == foldKey(tt.b); got != want {
				t.Errorf("foldKey(%q) == foldKey(%q) is %v; want %v (strings.EqualFold)", tt.a, tt.b, got, want)
			}
		})
	}
}

// FuzzFoldKey: the map key the edge uses for big objects agrees with
// strings.EqualFold, which encoding/json uses to match fields.
func FuzzFoldKey(f *testing.F) {
	f.Add("name", "NAME")
	f.Add("k", "\u212a")
	f.Add("σς", "ΣΣ")
	f.Fuzz(func(t *testing.T, a, b string) {
		if !utf8.ValidString(a) || !utf8.ValidString(b) {
			return // the edge refuses invalid UTF-8 before keys are compared
		}
		if got, want := foldKey(a) == foldKey(b), strings.EqualFold(a, b); got != want {
			t.Fatalf("foldKey(%q) == foldKey(%q) is %v; want %v (strings.EqualFold)", a, b, got, want)
		}
	})
}
