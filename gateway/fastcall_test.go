package gateway_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mark3labs/mcp-go/server"
)

// modernCall is a 2026-07-28 tools/call; meta is added to its _meta.
func modernCall(id int, name, args, meta string) string {
	m := `"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"t","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}`
	if meta != "" {
		m += "," + meta
	}
	return fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":%q,"arguments":%s,"_meta":{%s}}}`, id, name, args, m)
}

func modernHeaders(name string) map[string]string {
	return map[string]string{"Mcp-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": name}
}

type answer struct {
	status      int
	contentType string
	body        string
}

func post(t *testing.T, url, token, body string, header map[string]string) answer {
	t.Helper()
	resp, text := rawPost(t, url, token, body, header)
	return answer{resp.StatusCode, resp.Header.Get("Content-Type"), text}
}

// TestDirectToolCallsAnswerAsMCPGo: the direct path for 2026-07-28 tool
// calls answers exactly what mcp-go answers — results, tool errors, policy
// refusals, a revoke, a log message streamed ahead of the answer — and
// leaves every other request to mcp-go.
func TestDirectToolCallsAnswerAsMCPGo(t *testing.T) {
	up := httptest.NewServer(server.NewStreamableHTTPServer(relayUpstream()))
	t.Cleanup(up.Close)
	r := startReplica(t, replicaOpts{policy: testPolicy, upstream: up.URL + "/mcp"})
	slowH, fastH := r.gw.MCPHandlersForTest()
	slow, fast := httptest.NewServer(slowH), httptest.NewServer(fastH)
	t.Cleanup(slow.Close)
	t.Cleanup(fast.Close)
	slowToken := mintToken(t, r.url, "agent-1", sessionKeys["KEY1"], "")
	fastToken := mintToken(t, r.url, "agent-1", sessionKeys["KEY1"], "")

	same := []struct{ what, name, args string }{
		{"a result", "demo__list_files", `{}`},
		{"arguments kept", "demo__read_file", `{"path":"notes/ünïcode.txt","n":9007199254740993}`},
		{"a log message, then sampling refused", "web__ask", `{}`},
		{"a refusal by policy, then the revoke", "demo__run_shell", `{"command":"rm -rf /"}`},
		{"after the revoke", "demo__list_files", `{}`},
	}
	for i, c := range same {
		body := modernCall(i+1, c.name, c.args, "")
		want := post(t, slow.URL, slowToken, body, modernHeaders(c.name))
		got := post(t, fast.URL, fastToken, body, modernHeaders(c.name))
		if c.name == "web__ask" && want.contentType != "text/event-stream" {
			t.Errorf("%s: mcp-go answered %s %q; want a stream (else this case proves nothing)", c.what, want.contentType, want.body)
		}
		if got.status == 599 {
			t.Errorf("%s: the direct path declined a plain call", c.what)
			continue
		}
		if got != want {
			t.Errorf("%s:\n direct: %d %s %q\n mcp-go: %d %s %q", c.what, got.status, got.contentType, got.body,
				want.status, want.contentType, want.body)
		}
	}

	token := mintToken(t, r.url, "agent-1", sessionKeys["KEY1"], "")
	declined := []struct {
		what   string
		body   string
		header map[string]string
	}{
		{"a progress token", modernCall(1, "demo__list_files", `{}`, `"progressToken":"p1"`), modernHeaders("demo__list_files")},
		{"an unknown tool", modernCall(1, "demo__nope", `{}`, ""), modernHeaders("demo__nope")},
		{"no revision header", modernCall(1, "demo__list_files", `{}`, ""), map[string]string{"Mcp-Method": "tools/call", "Mcp-Name": "demo__list_files"}},
		{"revisions that differ", modernCall(1, "demo__list_files", `{}`, ""), map[string]string{"Mcp-Protocol-Version": "2026-07-29", "Mcp-Method": "tools/call", "Mcp-Name": "demo__list_files"}},
		{"a name header that differs", modernCall(1, "demo__list_files", `{}`, ""), modernHeaders("demo__read_file")},
		{"no method header", modernCall(1, "demo__list_files", `{}`, ""), map[string]string{"Mcp-Protocol-Version": "2026-07-28", "Mcp-Name": "demo__list_files"}},
		{"Last-Event-ID", modernCall(1, "demo__list_files", `{}`, ""), func() map[string]string {
			h := modernHeaders("demo__list_files")
			h["Last-Event-ID"] = "1"
			return h
		}()},
		{"no client capabilities", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"demo__list_files","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`, modernHeaders("demo__list_files")},
		{"a task", strings.Replace(modernCall(1, "demo__list_files", `{}`, ""), `"arguments"`, `"task":{"ttl":1000},"arguments"`, 1), modernHeaders("demo__list_files")},
		{"a legacy request", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"demo__list_files","arguments":{}}}`, nil},
		{"a notification", `{"jsonrpc":"2.0","method":"tools/call","params":{"name":"demo__list_files","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}`, modernHeaders("demo__list_files")},
		{"an id under another case", strings.Replace(modernCall(1, "demo__list_files", `{}`, ""), `"id"`, `"ID"`, 1), modernHeaders("demo__list_files")},
		{"params under another case", strings.Replace(modernCall(1, "demo__list_files", `{}`, ""), `"params"`, `"Params"`, 1), modernHeaders("demo__list_files")},
		{"another method", pingModern(), map[string]string{"Mcp-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/list"}},
	}
	for _, c := range declined {
		if got := post(t, fast.URL, token, c.body, c.header); got.status != 599 {
			t.Errorf("%s: the direct path answered %d %q; want it left to mcp-go", c.what, got.status, got.body)
		}
	}
	// The handler agents reach takes the direct path and falls back.
	for _, c := range []struct {
		body   string
		header map[string]string
	}{
		{modernCall(1, "demo__list_files", `{}`, ""), modernHeaders("demo__list_files")},
		{modernCall(2, "demo__list_files", `{}`, `"progressToken":"p1"`), modernHeaders("demo__list_files")},
	} {
		got := post(t, r.url, token, c.body, c.header)
		if got.status != http.StatusOK || !strings.Contains(got.body, `"result"`) {
			t.Errorf("gateway answered %d %q; want a result", got.status, got.body)
		}
	}
}
