package policies

import (
	"fmt"
	"testing"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
)

// TestCheapOperandFirst checks that a cheap operand that decides an && or
// || runs before an expensive one: the expensive one would go over the
// cost limit or fail, and the rule gives what the cheap one says.
func TestCheapOperandFirst(t *testing.T) {
	hist := make([]HistoryEntry, 100)
	for i := range hist {
		hist[i] = HistoryEntry{Name: "demo__a", Time: t0, Labels: []string{"x"}}
	}
	tests := []struct {
		when string
		want Action
	}{
		// Scanning the history costs more than the limit of 50.
		{`history.exists(h, "credential" in h.labels) && call.name == "demo__nope"`, ActionAllow},
		{`history.exists(h, "credential" in h.labels) || call.name == "demo__y"`, ActionDeny},
		{`history.countSince(duration("1h"), "*") > 1000 && session.profile == "ci"`, ActionAllow},
		// Reading a missing key fails.
		{`call.args.missing == 1 && call.name == "demo__nope"`, ActionAllow},
		{`call.args.missing == 1 || call.name == "demo__y"`, ActionDeny},
		{`(call.args.missing == 1 || history.exists(h, h.name == "z")) && (session.profile == "ci" || call.name == "demo__nope")`, ActionAllow},
	}
	for _, tt := range tests {
		t.Run(tt.when, func(t *testing.T) {
			pack := fmt.Sprintf("rules:\n  - id: r\n    action: deny\n    message: m\n    when: '%s'\n", tt.when)
			set, err := Compile([]SourceFile{{Name: "p.yaml", Data: []byte(pack)}}, Options{CostLimit: 50})
			if err != nil {
				t.Fatal(err)
			}
			d := set.Decide(&Input{Call: call("demo__y", `{}`), Session: Session{Profile: "dev"}, History: hist, Now: t0})
			if d.Action != tt.want || len(d.Errors) != 0 {
				t.Errorf("Decide = %s, errors %+v; want %s and no errors", d.Action, d.Errors, tt.want)
			}
			if d.Cost > 50 {
				t.Errorf("Decide.Cost = %d; want at most 50 (only the cheap operand runs)", d.Cost)
			}
		})
	}
}

// TestReorderKeepsResults evaluates expressions as written and reordered
// and checks they give the same value (or both fail), and that the
// static cost bound does not change.
func TestReorderKeepsResults(t *testing.T) {
	env, err := newCELEnv(&functions{})
	if err != nil {
		t.Fatal(err)
	}
	exprs := []string{
		`history.exists(h, "credential" in h.labels) && "external_send" in call.labels`,
		`"external_send" in call.labels && history.exists(h, "credential" in h.labels)`,
		`history.exists(h, "credential" in h.labels) || "external_send" in call.labels`,
		`history.sequence(["*__read_secret", "*__list_*"]) || session.risk > 0.5`,
		`history.countSince(duration("10m"), "*", "deny") >= 3 && call.name == "demo__x"`,
		`call.args.missing == 1 && call.name == "demo__http_request"`,
		`call.args.missing == 1 && call.name == "demo__other"`,
		`call.args.missing == 1 || call.name == "demo__http_request"`,
		`call.args.missing == 1 || call.name == "demo__other"`,
		`call.args.missing == 1 && call.args.other == 2`,
		`call.args.missing == 1 || call.args.other == 2`,
		`has(call.args.n) && call.args.n > 3`,
		`call.args.url.startsWith("https") && call.args.method == "POST" && session.profile == "dev"`,
		`call.args.url.startsWith("ftp") || call.args.method == "GET" || session.profile == "ci" || history.exists(h, h.name == "demo__list_files")`,
		`history.all(h, h.args.size() > 0 && h.name.startsWith("demo__"))`,
		`history.exists(h, h.args.path.startsWith("/etc") && h.name == "demo__read_file")`,
		`history.exists(h, h.name == "demo__read_secret" && h.args.missing == 1)`,
		`history.filter(h, h.decision == "allow" || h.args.missing == 1).size() > 2 && (session.calls > 3 || call.name == "x")`,
		`!(history.exists(h, "credential" in h.labels) && call.method == "tools/call") || session.risk < 0.2`,
		`(session.risk > 0.5 ? history.exists(h, h.name == "x") : call.name == "demo__http_request") && "7" in session.labels`,
		`flags.exists(f, f.kind == "injection" && f.score > 0.5) || call.args.body.matches("hel+o") && call.tool == "http_request"`,
		`is_private_ip(url_host(call.args.url)) || in_window(now, "UTC", "Mon-Fri", "09:00", "17:00") && call.server == "demo"`,
		`tainted(call.args) && call.name == "demo__none"`,
	}
	inputs := map[string]*Input{
		"bench":   benchInput(),
		"empty":   {Call: call("demo__other", `{"n": 5}`), Now: t0},
		"badArgs": {Call: call("demo__http_request", `[1]`, "external_send"), History: benchInput().History, Now: t0},
	}
	for _, src := range exprs {
		checked, iss := env.Compile(src)
		if iss.Err() != nil {
			t.Fatalf("Compile(%q): %v", src, iss.Err())
		}
		reordered := reorderLogic(env, checked)
		before, err := env.EstimateCost(checked, sizeHints{})
		if err != nil {
			t.Fatal(err)
		}
		after, err := env.EstimateCost(reordered, sizeHints{})
		if err != nil {
			t.Fatal(err)
		}
		if before.Max != after.Max {
			t.Errorf("EstimateCost(%q).Max = %d reordered; want %d as written", src, after.Max, before.Max)
		}
		asWritten := mustProgram(t, env, checked)
		fast := mustProgram(t, env, reordered)
		for name, in := range inputs {
			want, wantErr := evalOnce(asWritten, env.CELTypeAdapter(), in)
			got, gotErr := evalOnce(fast, env.CELTypeAdapter(), in)
			if (wantErr != nil) != (gotErr != nil) || (wantErr == nil && got.Equal(want) != types.True) {
				t.Errorf("%s: eval(%q) reordered = %v, %v; want %v, %v", name, src, got, gotErr, want, wantErr)
			}
		}
	}
}

func mustProgram(t *testing.T, env *cel.Env, a *cel.Ast) cel.Program {
	t.Helper()
	prg, err := env.Program(a, cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		t.Fatal(err)
	}
	return prg
}

func evalOnce(prg cel.Program, adapter types.Adapter, in *Input) (ref.Val, error) {
	st := evalState{in: in, adapter: adapter}
	out, _, err := prg.Eval(&st)
	return out, err
}

// TestReorderKeepsBounds checks, on every rule of the example packs, that
// reordering leaves the static cost bound as it was.
func TestReorderKeepsBounds(t *testing.T) {
	env, err := newCELEnv(&functions{})
	if err != nil {
		t.Fatal(err)
	}
	srcs, err := readSources([]string{"../examples/policies", "../examples/bench/pack50.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	srcs = append(srcs, source{path: "genPack(50)", data: genPack(50)})
	reordered := 0
	for _, src := range srcs {
		var f File
		if err := decodeStrict(src.data, &f); err != nil {
			t.Fatalf("%s: %v", src.path, err)
		}
		for _, r := range f.Rules {
			if r.When.Source == "" {
				continue
			}
			checked, iss := env.Compile(r.When.Source)
			if iss.Err() != nil {
				t.Fatalf("%s: %s: %v", src.path, r.ID, iss.Err())
			}
			out := reorderLogic(env, checked)
			if out != checked {
				reordered++
			}
			before, err1 := env.EstimateCost(checked, sizeHints{})
			after, err2 := env.EstimateCost(out, sizeHints{})
			if err1 != nil || err2 != nil || before.Max != after.Max {
				t.Errorf("%s: %s: EstimateCost reordered = %d, %v; want %d, %v", src.path, r.ID, after.Max, err2, before.Max, err1)
			}
		}
	}
	if reordered == 0 {
		t.Errorf("no example rule was reordered; want some (pack50 has history scans before label tests)")
	}
}
