package policies

import (
	"strings"
	"testing"
)

func TestCompileProblems(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // each must appear in one problem, in order
	}{
		{"undeclared reference with position", `
rules:
  - id: ok
    when: call.name == "x"
    action: allow
  - id: no-exfil
    when: |
      call.name == "x" &&
          cal.args.x == 1
    action: deny
    message: m
`, []string{`p.yaml: rules[1] (id "no-exfil").when: line 2 col 5: undeclared reference to 'cal'`}},
		{"not bool", `
rules:
  - {id: a, when: 'call.name', action: deny, message: m}
`, []string{`rules[0] (id "a").when: must be a bool expression, but it gives string`}},
		{"unknown key", `
rules:
  - {id: a, action: deny, message: m, actoin: deny}
`, []string{`field actoin not found in a rule`}},
		{"duplicate key", `
rules:
  - id: a
    action: deny
    action: allow
    message: m
`, []string{`"action" already defined`}},
		{"all errors at once", `
rules:
  - {action: explode}
  - {id: b, action: narrow, message: m}
  - {id: c, action: deny, when: 'call.nme == "x"', message: m}
  - {id: c, action: deny, message: m, mode: loud, severity: extreme}
  - {id: d, action: deny, message: m, when: 'in_window(now, "Mars/Olympus", "Mon-Fri", "09:00", "17:00")'}
  - {id: e, action: deny, message: m, when: 'ip_in_cidr(call.args.ip, "10.0.0.0/33")'}
  - {id: f, action: deny, message: m, when: 'call.args.x.matches("[")'}
  - {id: g, action: deny, message: m, when: 'history.countSince(duration("10q"), "*") > 1'}
  - {id: h, action: deny, message: m, when: 'glob("", call.name)'}
`, []string{
			`rules[0]: id is missing`,
			`rules[0]: action "explode" is not one of`,
			`rules[1] (id "b"): action narrow needs narrow.tools or narrow.labels`,
			`rules[2] (id "c").when: line 1 col 5: undefined field 'nme'`,
			`rules[3] (id "c"): mode "loud" is not enforce or shadow`,
			`rules[3] (id "c"): severity "extreme"`,
			`rules[3] (id "c"): id "c" is already used by p.yaml: rules[2]`,
			`rules[4] (id "d").when: line 1 col 10: in_window: unknown time zone "Mars/Olympus"`,
			`rules[5] (id "e").when: line 1 col 26: ip_in_cidr: "10.0.0.0/33" is not a CIDR`,
			`rules[6] (id "f").when: line 1 col 21: invalid matches argument`,
			`rules[7] (id "g").when: line 1 col 29: invalid duration argument`,
			`rules[8] (id "h").when: line 1 col 6: glob: empty glob`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			probs := compileProblems(t, tt.yaml)
			var lines []string
			for _, p := range probs {
				lines = append(lines, p.String())
			}
			all := strings.Join(lines, "\n")
			i := 0
			for _, w := range tt.want {
				found := false
				for ; i < len(lines); i++ {
					if strings.Contains(lines[i], w) {
						found = true
						i++
						break
					}
				}
				if !found {
					t.Errorf("Compile problems =\n%s\nwant (in order) a line containing %q", all, w)
				}
			}
			if !strings.HasPrefix(all, "p.yaml: ") {
				t.Errorf("Compile problems =\n%s\nwant each to start with the file name", all)
			}
		})
	}
}

func TestCompileDefaultsAndOrder(t *testing.T) {
	a := SourceFile{Name: "a.yaml", Data: []byte("rules:\n  - {id: a1, action: deny, message: m}\n")}
	b := SourceFile{Name: "b.yaml", Data: []byte("rules:\n  - {id: b1, action: allow, mode: shadow, severity: high}\n")}
	set, err := Compile([]SourceFile{a, b}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	rules := set.Rules()
	if len(rules) != 2 || rules[0].ID != "a1" || rules[0].Mode != ModeEnforce || rules[0].Severity != SeverityMedium ||
		rules[1].Mode != ModeShadow || rules[1].Severity != SeverityHigh {
		t.Errorf("Rules() = %+v; want a1 (enforce, medium) then b1 (shadow, high)", rules)
	}
	other, _ := Compile([]SourceFile{b, a}, Options{})
	if other.Version() == set.Version() {
		t.Errorf("Version() is %q for both file orders; want different", set.Version())
	}
	same, _ := Compile([]SourceFile{a, b}, Options{})
	if same.Version() != set.Version() {
		t.Errorf("Version() = %q then %q for the same files; want equal", set.Version(), same.Version())
	}
}
