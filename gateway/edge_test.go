package gateway

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestCheckMessage(t *testing.T) {
	deep := strings.Repeat(`{"a":`, 70) + "1" + strings.Repeat("}", 70)
	tests := []struct {
		name string
		body string
		code int // 0: accepted
		want string
	}{
		{"call", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"demo__read_file","arguments":{"path":"a.txt"}}}`, 0, ""},
		{"string id", `{"jsonrpc":"2.0","id":"x","method":"ping"}`, 0, ""},
		{"notification", `{"jsonrpc":"2.0","method":"notifications/initialized"}`, 0, ""},
		{"response", `{"jsonrpc":"2.0","id":3,"result":{}}`, 0, ""},
		{"big number kept", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"n":9007199254740993}}}`, 0, ""},
		{"non-ascii", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"s":"Grüße 日本"}}}`, 0, ""},
		{"same key in sibling objects", `{"jsonrpc":"2.0","id":1,"method":"m","params":{"a":{"x":1},"b":{"x":2}}}`, 0, ""},
		{"batch", `[{"jsonrpc":"2.0","id":1,"method":"ping"}]`, codeInvalidRequest, "batches are not supported"},
		{"not an object", `"ping"`, codeInvalidRequest, "must be a JSON object"},
		{"truncated", `{"jsonrpc":"2.0","id":1,"method":"ping"`, codeParseError, "unexpected end"},
		{"trailing data", `{"jsonrpc":"2.0","id":1,"method":"ping"} {}`, codeParseError, "after the JSON object"},
		{"duplicate key", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}`, codeParseError, `duplicate key "name"`},
		{"case-variant key", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","Name":"b"}}`, codeParseError, `differ only in case`},
		{"escaped duplicate", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","na\u006de":"b"}}`, codeParseError, `duplicate key "name"`},
		{"case-variant in arguments", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"path":"/ok","PATH":"/etc"}}}`, codeParseError, "differ only in case"},
		{"duplicate top-level method", `{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call"}`, codeParseError, "duplicate key"},
		{"too deep", `{"jsonrpc":"2.0","id":1,"method":"m","params":` + deep + `}`, codeParseError, "nesting deeper than 64"},
		{"invalid utf-8", "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"params\":{\"s\":\"\xff\"}}", codeParseError, "UTF-8"},
		{"control char", "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\\n\x01\"}", codeParseError, "control character"},
		{"wrong version", `{"jsonrpc":"1.0","id":1,"method":"ping"}`, codeInvalidRequest, `"jsonrpc" must be "2.0"`},
		{"null id", `{"jsonrpc":"2.0","id":null,"method":"ping"}`, codeInvalidRequest, `"id" must be`},
		{"case-variant jsonrpc key", `{"jsonrpC":"2.0","id":1,"method":"ping"}`, codeInvalidRequest, `"jsonrpc" must be "2.0"`},
		{"case-variant method key", `{"jsonrpc":"2.0","id":1,"Method":"tools/call"}`, codeInvalidRequest, `without "method"`},
		{"huge number in arguments", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"n":1e700}}}`, 0, ""},
		{"fractional id", `{"jsonrpc":"2.0","id":1.5,"method":"ping"}`, codeInvalidRequest, `"id" must be`},
		{"method not string", `{"jsonrpc":"2.0","id":1,"method":7}`, codeInvalidRequest, `"method" must be`},
		{"params scalar", `{"jsonrpc":"2.0","id":1,"method":"ping","params":3}`, codeInvalidRequest, `"params" must be`},
		{"response with both", `{"jsonrpc":"2.0","id":1,"result":{},"error":{"code":1,"message":"x"}}`, codeInvalidRequest, "exactly one of"},
		{"bad literal", `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"a":tru}}`, codeParseError, "invalid literal"},
		{"leading zero", `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"a":01}}`, codeParseError, "expected ','"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, e := checkMessage([]byte(tt.body), DefaultMaxDepth)
			switch {
			case tt.code == 0 && e != nil:
				t.Fatalf("checkMessage(%s) = %q; want accepted", tt.body, e.msg)
			case tt.code != 0 && e == nil:
				t.Fatalf("checkMessage(%s) accepted; want code %d", tt.body, tt.code)
			case tt.code != 0 && (e.code != tt.code || !strings.Contains(e.msg, tt.want)):
				t.Fatalf("checkMessage(%s) = %d %q; want %d containing %q", tt.body, e.code, e.msg, tt.code, tt.want)
			}
		})
	}
}

func FuzzCheckMessage(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"x":[1,2,{"y":null}]}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","Name":"b"}}`,
		`[{"jsonrpc":"2.0"}]`, `{"a":"\u00e9\ud83d\ude00"}`, `{"n":-0.5e+10}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		_, e := checkMessage(body, DefaultMaxDepth)
		if e != nil && e.msg == "" {
			t.Fatalf("rejection without a message for %q", body)
		}
		if e == nil && !json.Valid(body) {
			t.Fatalf("accepted invalid JSON %q", body)
		}
	})
}
