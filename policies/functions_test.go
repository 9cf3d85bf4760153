package policies

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"
)

func TestGlob(t *testing.T) {
	tests := []struct {
		pattern, name string
		want          bool
	}{
		{"*", "", true},
		{"*", "demo__x", true},
		{"demo__*", "demo__read_file", true},
		{"demo__*", "other__read_file", false},
		{"*__read_*", "vault__read_secret", true},
		{"*__read_*", "vault__write_secret", false},
		{"a?c", "abc", true},
		{"a?c", "ac", false},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "axxbyy", false},
		{"exact", "exact", true},
		{"exact", "exactly", false},
	}
	for _, tt := range tests {
		if got := Glob(tt.pattern, tt.name); got != tt.want {
			t.Errorf("Glob(%q, %q) = %v; want %v", tt.pattern, tt.name, got, tt.want)
		}
	}
}

// TestGlobAll compares Glob with a plain recursive matcher on every
// pattern over "ab*?" and every name over "ab", up to five characters.
func TestGlobAll(t *testing.T) {
	var ref func(p, n string) bool
	ref = func(p, n string) bool {
		switch {
		case p == "":
			return n == ""
		case p[0] == '*':
			return ref(p[1:], n) || n != "" && ref(p, n[1:])
		case n == "":
			return false
		case p[0] == '?' || p[0] == n[0]:
			return ref(p[1:], n[1:])
		}
		return false
	}
	words := func(alphabet string, max int) []string {
		out := []string{""}
		for i := 0; i < len(out); i++ {
			if len(out[i]) < max {
				for _, c := range alphabet {
					out = append(out, out[i]+string(c))
				}
			}
		}
		return out
	}
	names := words("ab", 5)
	for _, p := range words("ab*?", 5) {
		for _, n := range names {
			if got, want := Glob(p, n), ref(p, n); got != want {
				t.Fatalf("Glob(%q, %q) = %v; want %v", p, n, got, want)
			}
		}
	}
}

// TestFunctions evaluates each CEL helper through a real policy set.
func TestFunctions(t *testing.T) {
	hist := []HistoryEntry{
		{Name: "vault__read_secret", Decision: "allow", Time: t0.Add(-30 * time.Minute), Labels: []string{"credential"}},
		{Name: "demo__http_request", Decision: "deny", Time: t0.Add(-9 * time.Minute), Args: []byte(`{"url":"https://x.example"}`)},
		{Name: "demo__send_mail", Decision: "deny", Time: t0.Add(-5 * time.Minute), ResultTags: []string{"pii"}},
		{Name: "demo__send_mail", Decision: "allow", Time: t0.Add(-1 * time.Minute)},
	}
	in := Input{
		Call: call("demo__http_request", `{"url":"https://User@API.Example.com:8443/x?y=1","to":"Ann <ann@Corp.Example>",
			"ip":"10.1.2.3","big":123456789012345678901234567890,"u":18446744073709551615,"f":1.5,"n":-3,"list":[1,"a",null]}`, "external_send"),
		Session: Session{ID: "s1", Profile: "dev", Labels: map[string]string{"team": "red"}, Started: t0.Add(-time.Hour),
			Expires: t0.Add(time.Hour), Calls: 4, Denied: 2, Risk: 0.5, Scope: []string{"demo__*"}},
		History: hist,
		Agent:   map[string]any{"sub": "agent-7", "groups": []any{"ci"}},
		Now:     t0, // Monday 10:00 UTC, 11:00 in Berlin
		Flags:   []Flag{{Kind: "taint", Detail: "secret then send", Score: 0.9}},
	}
	tests := []struct {
		expr string
		want bool
	}{
		{`"demo__*".glob(call.name)`, true},
		{`glob("vault__*", call.name)`, false},
		{`history.sequence(["vault__read_*", "*__http_request"])`, true},
		{`history.sequence(["*__http_request", "vault__read_*"])`, false},
		{`history.sequence(["vault__*", "*__send_*", "*__send_*"])`, true},
		{`history.sequence([])`, true},
		{`[].sequence(["x"]) == false`, true},
		{`history.countSince(duration("10m"), "*__send_*") == 2`, true},
		{`history.countSince(duration("10m"), "*", "deny") == 2`, true},
		{`history.countSince(duration("6m"), "*", "deny") == 1`, true},
		{`history.countSince(now - duration("1h"), "*") == 4`, true},
		{`history.filter(h, h.decision == "allow").countSince(duration("2m"), "*") == 1`, true},
		{`url_host(call.args.url) == "api.example.com"`, true},
		{`url_host("example.org/path") == "example.org"`, true},
		{`url_host("") == ""`, true},
		{`email_domain(call.args.to) == "corp.example"`, true},
		{`email_domain("nobody") == ""`, true},
		{`ip_in_cidr(call.args.ip, "10.0.0.0/8")`, true},
		{`ip_in_cidr(call.args.ip, "192.168.0.0/16")`, false},
		{`ip_in_cidr("not-an-ip", "10.0.0.0/8")`, false},
		{`ip_in_cidr("::ffff:10.0.0.1", "10.0.0.0/8")`, true},
		{`is_private_ip(call.args.ip) && is_private_ip("127.0.0.1") && is_private_ip("fd00::1") && is_private_ip("169.254.169.254")`, true},
		{`is_private_ip("8.8.8.8") || is_private_ip("example.com")`, false},
		{`in_window(now, "Europe/Berlin", "Mon-Fri", "09:00", "17:00")`, true},
		{`in_window(now, "Europe/Berlin", "Mon-Fri", "12:00", "17:00")`, false},
		{`in_window(now, "UTC", "Sat,Sun", "00:00", "24:00")`, false},
		{`in_window(now, "UTC", "Sun", "22:00", "10:30")`, true},
		{`in_window(now, "UTC", "Mon", "22:00", "10:30")`, false},
		{`in_window(now, "America/New_York", "*", "05:00", "05:01")`, true},
		{`call.server == "demo" && call.tool == "http_request" && call.method == "tools/call" && "external_send" in call.labels`, true},
		{`call.args.big == "123456789012345678901234567890"`, true},
		{`call.args.u == 18446744073709551615u && call.args.f == 1.5 && call.args.n == -3`, true},
		{`call.args.list.size() == 3 && call.args.list[2] == null`, true},
		{`session.id == "s1" && session.profile == "dev" && session.labels.team == "red"`, true},
		{`session.age == duration("1h") && session.expires - now == duration("1h") && session.started < now`, true},
		{`session.calls == 4 && session.denied == 2 && session.risk == 0.5 && session.scope == ["demo__*"]`, true},
		{`history[1].args.url == "https://x.example" && history[2].result_tags == ["pii"] && "credential" in history[0].labels`, true},
		{`history.exists(h, h.time > now - duration("2m") && h.decision == "allow")`, true},
		{`agent.sub == "agent-7" && "ci" in agent.groups`, true},
		{`flags.exists(f, f.kind == "taint" && f.score > 0.5 && f.detail != "")`, true},
		{`has(call.args.url) && !has(call.args.nope)`, true},
		{`type(call) == toolgate.Call`, true},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			set := mustCompile(t, fmt.Sprintf("rules:\n  - {id: r, when: %s, action: deny, message: m}\n", quoteYAML(tt.expr)))
			d := set.Decide(&in)
			if len(d.Errors) > 0 {
				t.Fatalf("eval %s: %+v", tt.expr, d.Errors)
			}
			if got := d.Action == ActionDeny; got != tt.want {
				t.Errorf("eval %s = %v; want %v", tt.expr, got, tt.want)
			}
		})
	}
}

func quoteYAML(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func TestParseArgs(t *testing.T) {
	tests := []struct {
		raw  string
		want map[string]any
	}{
		{``, map[string]any{}},
		{`{}`, map[string]any{}},
		{`{"a":1,"b":-9223372036854775808,"c":18446744073709551615,"d":18446744073709551616,"e":1e3,"f":"x","g":true,"h":null}`,
			map[string]any{"a": int64(1), "b": int64(-9223372036854775808), "c": uint64(18446744073709551615),
				"d": "18446744073709551616", "e": float64(1000), "f": "x", "g": true, "h": nil}},
		{`{"n":{"m":[1,2.5,{"k":3}]}}`, map[string]any{"n": map[string]any{"m": []any{int64(1), 2.5, map[string]any{"k": int64(3)}}}}},
	}
	for _, tt := range tests {
		got, err := ParseArgs([]byte(tt.raw))
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseArgs(%q) = %#v, %v; want %#v", tt.raw, got, err, tt.want)
		}
	}
	for _, bad := range []string{`[1]`, `"x"`, `{"a":`} {
		if _, err := ParseArgs([]byte(bad)); err == nil {
			t.Errorf("ParseArgs(%q) error = nil; want an error", bad)
		}
	}
}
