package tools

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
)

// TestParseCallToolResult holds parseCallToolResult to mcp-go's
// ParseCallToolResult, less the _meta that Call clears.
func TestParseCallToolResult(t *testing.T) {
	tests := []string{
		`{"content":[{"type":"text","text":"hi"}]}`,
		`{"content":[{"type":"text","text":"a","annotations":{"audience":["user"],"priority":0.5}},{"type":"image","data":"AAAA","mimeType":"image/png"}],"isError":true}`,
		`{"content":[{"type":"resource","resource":{"uri":"file:///a","text":"x","mimeType":"text/plain"}}]}`,
		`{"content":[{"type":"resource_link","uri":"file:///b","name":"b"}]}`,
		`{"content":[],"structuredContent":{"n":9007199254740993,"s":"é"}}`,
		`{"content":[{"type":"text","text":"x","_meta":{"k":"v"}}],"_meta":{"io.modelcontextprotocol/server":{"name":"u"}},"resultType":"complete"}`,
		`{"content":null}`,
		`{"content":[{"type":"text","text":"x"}],"_meta":null}`,
		`{"resultType":"input_required","inputRequests":{"a":{"method":"elicitation/create","params":{"message":"m","requestedSchema":{"type":"object"}}}},"requestState":"st"}`,
		// Failures: both must refuse.
		`{}`,
		`{"isError":true}`,
		`{"content":[{"type":"nope"}]}`,
		`{"content":[{"text":"no type"}]}`,
		`{"content":{"type":"text"}}`,
		`{"content":[],"_meta":5}`,
		`{"content":[],"structuredContent":}`,
		`[1]`,
		`not json`,
	}
	for _, in := range tests {
		raw := json.RawMessage(in)
		want, wantErr := mcp.ParseCallToolResult(&raw)
		got, err := parseCallToolResult(json.RawMessage(in))
		if (err != nil) != (wantErr != nil) {
			t.Errorf("parseCallToolResult(%s) error = %v; mcp-go's = %v", in, err, wantErr)
			continue
		}
		if err != nil {
			continue
		}
		want.Meta = nil
		if !reflect.DeepEqual(got, want) {
			t.Errorf("parseCallToolResult(%s) = %+v; mcp-go's = %+v", in, got, want)
		}
	}
}

// TestAppendCallBody holds the tools/call body built by hand to what
// encoding/json makes of the same request through mcp-go's transport.
func TestAppendCallBody(t *testing.T) {
	many := map[string]any{}
	for i := range 12 {
		many[string(rune('l'-i))+"-key"] = i
	}
	tests := []struct {
		name string
		args string
		meta map[string]any
	}{
		{name: "echo_raw", args: `{"text":"hi"}`},
		{name: "echo_raw", args: ` { "n" : 9007199254740993 ,
			"text": "héllo 日本語 🚀 \u00e9" } `},
		{name: "echo_raw", meta: map[string]any{"io.toolgate/session": "s-1", "io.toolgate/call": int64(7),
			"traceparent": "00-0102-01", "progressToken": "toolgate-progress-3"}},
		{name: "x", args: `[]`, meta: map[string]any{"f": 1.5, "b": true, "n": nil, "u": uint64(1 << 63), "i": 3,
			"nested": map[string]any{"z": []any{1, "two"}}, "esc": "a\"b\\c\n\u2028<&>"}},
		{name: "odd \"name\" <&>", args: `{"html":"<b>&</b>"}`, meta: many},
		{name: "no_args"},
	}
	for _, tt := range tests {
		var args json.RawMessage
		if tt.args != "" {
			args = json.RawMessage(tt.args)
		}
		got, err := appendCallBody(nil, 42, tt.name, args, tt.meta)
		if err != nil {
			t.Errorf("appendCallBody(%q, %s): %v", tt.name, tt.args, err)
			continue
		}
		want, err := json.Marshal(transport.JSONRPCRequest{JSONRPC: mcp.JSONRPC_VERSION, ID: mcp.NewRequestId("toolgate-42"),
			Method: string(mcp.MethodToolsCall), Params: callParams{Name: tt.name, Arguments: args, Meta: tt.meta}})
		if err != nil {
			t.Fatal(err)
		}
		// encoding/json also escapes <, > and & inside the arguments; the
		// hand-built body leaves them as the agent sent them.
		var g, w any
		if err := json.Unmarshal(got, &g); err != nil {
			t.Errorf("appendCallBody(%q, %s) = %s, not JSON: %v", tt.name, tt.args, got, err)
			continue
		}
		_ = json.Unmarshal(want, &w)
		if !reflect.DeepEqual(g, w) {
			t.Errorf("appendCallBody(%q, %s) = %s; want %s", tt.name, tt.args, got, want)
		}
		if !bytes.ContainsAny(args, "<>&") && !bytes.Equal(got, want) {
			t.Errorf("appendCallBody(%q, %s) = %s; want the bytes %s", tt.name, tt.args, got, want)
		}
	}
	if _, err := appendCallBody(nil, 1, "x", json.RawMessage(`{"a":`), nil); err == nil {
		t.Errorf("appendCallBody with arguments that are not JSON succeeded; want an error")
	}
}
