package policies

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
)

// parseArgsDecoder is ParseArgs done entirely by encoding/json's decoder,
// the reference the direct parser must agree with.
func parseArgsDecoder(raw []byte) (map[string]any, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return map[string]any{}, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("parse arguments: %w", err)
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("parse arguments: want a JSON object, got %T", v)
	}
	return convertNumbers(obj).(map[string]any), nil
}

var parseArgsCases = []string{
	``, ` `, `{}`, ` { } `, `{"a":1}`, `{"a":-0}`, `{"a":1.5e3,"b":-2E-2,"c":0.0}`,
	`{"big":123456789012345678901234567890,"u":18446744073709551615,"neg":-9223372036854775809}`,
	`{"s":"plain","t":true,"f":false,"n":null}`, `{"a":[],"b":{},"c":[1,[2,{"d":"e"}]]}`,
	`{"a":1,"a":2}`, `{"esc":"a\"b\\c\/d\n\u00e9\ud83d\ude00"}`, `{"k\"ey":"v"}`,
	"{\"utf8\":\"h\u00e9llo \u4e16\u754c\"}", "{\"bad\":\"a\xffb\",\"k\xfe\":1}", "{\"half\":\"\xe4\xb8\"}",
	`{"url":"https://api.example.com/upload?q=1&r=2","to":["a@b.example","c@d.example"]}`,
	" \t\n{\"a\" : [ 1 , 2 ] }\r\n", `{"a":1} `, `{"a":1}{"b":2}`, `{"a":1} x`, `{"a":}`,
	`[1,2]`, `"s"`, `12`, `null`, `{"a":01}`, `{"a":1,}`, `{a:1}`, `{"a":"\x"}`, `{"a":"x`,
	"{\"ctl\":\"a\x01b\"}", `{"a":tru}`, `{"a":NaN}`, "\xef\xbb\xbf{}",
}

// TestParseArgsAgreesWithDecoder checks the direct parser against
// encoding/json's decoder: the same value, or an error with the same text.
func TestParseArgsAgreesWithDecoder(t *testing.T) {
	for _, raw := range parseArgsCases {
		checkParseArgs(t, []byte(raw))
	}
}

func FuzzParseArgs(f *testing.F) {
	for _, raw := range parseArgsCases {
		f.Add([]byte(raw))
	}
	f.Fuzz(func(t *testing.T, raw []byte) { checkParseArgs(t, raw) })
}

func checkParseArgs(t *testing.T, raw []byte) {
	t.Helper()
	got, err := ParseArgs(raw)
	want, wantErr := parseArgsDecoder(raw)
	if (err == nil) != (wantErr == nil) || err != nil && err.Error() != wantErr.Error() {
		t.Fatalf("ParseArgs(%q) error = %v; want %v", raw, err, wantErr)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ParseArgs(%q) = %#v; want %#v", raw, got, want)
	}
}
