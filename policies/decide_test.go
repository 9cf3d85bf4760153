package policies

import (
	"slices"
	"strings"
	"testing"
	"time"
)

const decidePack = `
rules:
  - id: deny-secrets
    match: {labels: [credential]}
    when: session.profile != "ops"
    action: deny
    message: no secrets
    severity: high
  - id: approve-deploy
    match: {tools: [deploy]}
    action: require_approval
    message: needs a human
  - id: revoke-exfil
    match: {labels: [external_send]}
    when: history.sequence(["*__read_secret", "*__list_*"])
    action: revoke
    message: exfiltration
    severity: critical
  - id: narrow-after-read
    match: {servers: [demo], tools: [demo__read_file]}
    when: call.args.path.startsWith("/etc/")
    action: narrow
    narrow: {labels: [external_send]}
    message: no sending after reading config
  - id: narrow-self
    when: call.name == "demo__slow_count" && call.args.n > 10
    action: narrow
    narrow: {tools: ["demo__slow_*"]}
    message: slow tools removed
  - id: shadow-big
    when: has(call.args.n) && call.args.n > 1000000000000
    action: deny
    mode: shadow
    message: big
  - id: boom
    when: call.name == "demo__boom" && call.args.missing == 1
    action: deny
    message: boom
  - id: shadow-boom
    mode: shadow
    when: call.name == "demo__boom" && call.args.other == 1
    action: deny
    message: boom
`

func TestDecide(t *testing.T) {
	set := mustCompile(t, decidePack)
	hist := func(names ...string) []HistoryEntry {
		var h []HistoryEntry
		for i, n := range names {
			h = append(h, HistoryEntry{Name: n, Decision: "allow", Time: t0.Add(time.Duration(i-len(names)) * time.Minute)})
		}
		return h
	}
	tests := []struct {
		name      string
		in        Input
		want      Action
		wantRule  string
		matched   []string
		wouldHave []string
		narrow    Narrowing
		errRules  []string
	}{
		{name: "no rule matches: allow", in: Input{Call: call("demo__list_files", `{}`)}, want: ActionAllow},
		{name: "label match and when", in: Input{Call: call("demo__read_secret", `{}`, "credential")},
			want: ActionDeny, wantRule: "deny-secrets", matched: []string{"deny-secrets"}},
		{name: "when false", in: Input{Call: call("demo__read_secret", `{}`, "credential"), Session: Session{Profile: "ops"}},
			want: ActionAllow},
		{name: "bare tool glob", in: Input{Call: call("demo__deploy", `{}`)},
			want: ActionRequireApproval, wantRule: "approve-deploy", matched: []string{"approve-deploy"}},
		{name: "strictest wins", in: Input{Call: call("demo__deploy", `{}`, "credential")},
			want: ActionDeny, wantRule: "deny-secrets", matched: []string{"deny-secrets", "approve-deploy"}},
		{name: "sequence in order revokes", in: Input{Call: call("demo__http_request", `{}`, "external_send"),
			History: hist("demo__read_secret", "demo__read_file", "demo__list_files")},
			want: ActionRevoke, wantRule: "revoke-exfil", matched: []string{"revoke-exfil"}},
		{name: "sequence out of order", in: Input{Call: call("demo__http_request", `{}`, "external_send"),
			History: hist("demo__list_files", "demo__read_secret")}, want: ActionAllow},
		{name: "narrow", in: Input{Call: call("demo__read_file", `{"path":"/etc/passwd"}`)},
			want: ActionNarrow, wantRule: "narrow-after-read", matched: []string{"narrow-after-read"},
			narrow: Narrowing{Labels: []string{"external_send"}}},
		{name: "narrow covering the call denies", in: Input{Call: call("demo__slow_count", `{"n": 11}`)},
			want: ActionDeny, wantRule: "narrow-self", matched: []string{"narrow-self"},
			narrow: Narrowing{Tools: []string{"demo__slow_*"}}},
		{name: "shadow reported, not enforced", in: Input{Call: call("demo__slow_count", `{"n": 9007199254740993}`)},
			want: ActionDeny, wantRule: "narrow-self", matched: []string{"narrow-self"}, wouldHave: []string{"shadow-big"},
			narrow: Narrowing{Tools: []string{"demo__slow_*"}}},
		{name: "eval error in enforced rule denies", in: Input{Call: call("demo__boom", `{}`)},
			want: ActionDeny, wantRule: "boom", errRules: []string{"boom", "shadow-boom"}},
		{name: "bad args JSON denies", in: Input{Call: call("demo__read_file", `{"path":`)},
			want: ActionDeny, wantRule: "narrow-after-read", errRules: []string{"narrow-after-read", "shadow-big"}},
		{name: "out of scope before rules", in: Input{Call: call("demo__deploy", `{}`), OutOfScope: ActionRevoke},
			want: ActionRevoke},
		{name: "out of scope deny", in: Input{Call: call("demo__deploy", `{}`), OutOfScope: ActionDeny},
			want: ActionDeny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.in.Now.IsZero() {
				tt.in.Now = t0
			}
			d := set.Decide(&tt.in)
			if d.Action != tt.want || d.Rule != tt.wantRule {
				t.Errorf("Decide(%s) = %s (rule %q); want %s (rule %q); errors %+v", tt.in.Call.Name, d.Action, d.Rule, tt.want, tt.wantRule, d.Errors)
			}
			if got := ids(d.Matched); !slices.Equal(got, tt.matched) {
				t.Errorf("Decide(%s).Matched = %v; want %v", tt.in.Call.Name, got, tt.matched)
			}
			if got := ids(d.WouldHave); !slices.Equal(got, tt.wouldHave) {
				t.Errorf("Decide(%s).WouldHave = %v; want %v", tt.in.Call.Name, got, tt.wouldHave)
			}
			if !slices.Equal(d.Narrow.Tools, tt.narrow.Tools) || !slices.Equal(d.Narrow.Labels, tt.narrow.Labels) {
				t.Errorf("Decide(%s).Narrow = %+v; want %+v", tt.in.Call.Name, d.Narrow, tt.narrow)
			}
			var errRules []string
			for _, e := range d.Errors {
				errRules = append(errRules, e.Rule)
			}
			if !slices.Equal(errRules, tt.errRules) {
				t.Errorf("Decide(%s).Errors = %+v; want rules %v", tt.in.Call.Name, d.Errors, tt.errRules)
			}
			if strings.Contains(d.Message, "call.args") || strings.Contains(d.Message, "==") {
				t.Errorf("Decide(%s).Message = %q; must not show an expression", tt.in.Call.Name, d.Message)
			}
			if d.Version != set.Version() {
				t.Errorf("Decide(%s).Version = %q; want %q", tt.in.Call.Name, d.Version, set.Version())
			}
		})
	}
}

func ids(rs []RuleResult) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.ID)
	}
	return out
}

func TestDecideWithoutNowDenies(t *testing.T) {
	set := mustCompile(t, "rules: []")
	d := set.Decide(&Input{Call: call("demo__list_files", `{}`)})
	if d.Action != ActionDeny || len(d.Errors) != 1 || d.Errors[0].Kind != ErrInput {
		t.Errorf("Decide(no Now) = %s, errors %+v; want deny with an input error", d.Action, d.Errors)
	}
}

func TestCostLimits(t *testing.T) {
	const pack = `
rules:
  - id: heavy
    when: history.exists(h, h.args.x == 1 && history.exists(g, g.name == h.name + "x"))
    action: deny
    message: heavy
  - id: heavy2
    when: history.exists(h, h.args.x == 1 && history.exists(g, g.name == h.name + "y"))
    action: deny
    message: heavy
`
	hist := make([]HistoryEntry, 300)
	for i := range hist {
		hist[i] = HistoryEntry{Name: "demo__a", Args: []byte(`{"x":1}`), Time: t0}
	}
	// Measure the cost of the pack (two rules of equal cost), then set
	// limits around it.
	big := Options{CostLimit: 100_000_000, CallBudget: 100_000_000}
	set, err := Compile([]SourceFile{{Name: "p.yaml", Data: []byte(pack)}}, big)
	if err != nil {
		t.Fatal(err)
	}
	total := set.Decide(&Input{Call: call("demo__y", `{}`), History: hist, Now: t0}).Cost
	tests := []struct {
		name     string
		opts     Options
		wantKind ErrorKind
		wantRule string
	}{
		{"per-expression limit", Options{CostLimit: total / 4}, ErrCostLimit, "heavy"},
		{"per-call budget", Options{CostLimit: total, CallBudget: total * 3 / 4}, ErrBudget, "heavy2"},
		{"within limits", Options{CostLimit: total, CallBudget: total}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, err := Compile([]SourceFile{{Name: "p.yaml", Data: []byte(pack)}}, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			d := set.Decide(&Input{Call: call("demo__y", `{}`), History: hist, Now: t0})
			if tt.wantKind == "" {
				if d.Action != ActionAllow || len(d.Errors) != 0 {
					t.Fatalf("Decide = %s, errors %+v (cost %d); want allow", d.Action, d.Errors, d.Cost)
				}
				return
			}
			if d.Action != ActionDeny || d.Rule != tt.wantRule || len(d.Errors) == 0 || d.Errors[0].Kind != tt.wantKind {
				t.Fatalf("Decide = %s (rule %q), errors %+v; want deny by %q with a %s error", d.Action, d.Rule, d.Errors, tt.wantRule, tt.wantKind)
			}
			if !strings.Contains(d.Message, tt.wantRule) || strings.Contains(d.Message, "exists") {
				t.Errorf("Decide.Message = %q; want the rule named and no expression", d.Message)
			}
		})
	}
}

func TestScope(t *testing.T) {
	s := Scope{Tools: []string{"demo__*"}}
	n := s.Narrow(Narrowing{Tools: []string{"demo__deploy"}, Labels: []string{"external_send"}})
	tests := []struct {
		scope  Scope
		name   string
		labels []string
		want   bool
	}{
		{s, "demo__deploy", nil, true},
		{s, "other__x", nil, false},
		{n, "demo__deploy", nil, false},
		{n, "demo__http_request", []string{"external_send"}, false},
		{n, "demo__read_file", []string{"private_data"}, true},
		{Scope{}, "demo__read_file", nil, false},
	}
	for _, tt := range tests {
		if got := tt.scope.Permits(tt.name, tt.labels); got != tt.want {
			t.Errorf("%+v.Permits(%q, %v) = %v; want %v", tt.scope, tt.name, tt.labels, got, tt.want)
		}
	}
	if len(s.Removed.Tools) != 0 {
		t.Errorf("Narrow changed its receiver: %+v", s)
	}
}
