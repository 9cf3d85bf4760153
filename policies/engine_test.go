package policies

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

const denyShell = "rules:\n  - {id: no-shell, match: {tools: [demo__run_shell]}, action: deny, message: no}\n"

func TestEngineReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "p.yaml")
	writeFile(t, path, denyShell)
	writeFile(t, filepath.Join(dir, "p_test.yaml"), "not: [a, policy") // tests are not policies
	clock := t0
	var events []ReloadEvent
	e, err := NewEngine([]string{dir}, EngineOptions{
		Now:      func() time.Time { return clock },
		OnReload: func(ev ReloadEvent) { events = append(events, ev) },
	})
	if err != nil {
		t.Fatalf("NewEngine: %v", err)
	}
	shell := &Input{Call: call("demo__run_shell", `{}`), Now: t0}
	if d := e.Decide(shell); d.Action != ActionDeny {
		t.Fatalf("Decide(run_shell) = %s; want deny", d.Action)
	}
	v1 := e.Set().Version()

	steps := []struct {
		name        string
		write       string
		wantChanged bool
		wantErr     string
		wantAction  Action
	}{
		{"unchanged", denyShell, false, "", ActionDeny},
		{"changed", "rules:\n  - {id: ask-shell, match: {tools: [demo__run_shell]}, action: require_approval, message: ask}\n", true, "", ActionRequireApproval},
		{"broken keeps old set", "rules:\n  - {id: x, when: 'cal.name', action: deny, message: m}\n", false, "undeclared reference to 'cal'", ActionRequireApproval},
		{"still broken", "rules:\n  - {id: x, when: 'cal.name', action: deny, message: m}\n", false, "undeclared reference to 'cal'", ActionRequireApproval},
		{"fixed", denyShell, true, "", ActionDeny},
	}
	for _, st := range steps {
		clock = clock.Add(time.Minute)
		writeFile(t, path, st.write)
		changed, err := e.Reload()
		if changed != st.wantChanged || (err == nil) != (st.wantErr == "") || (err != nil && !strings.Contains(err.Error(), st.wantErr)) {
			t.Errorf("%s: Reload() = %v, %v; want %v, error containing %q", st.name, changed, err, st.wantChanged, st.wantErr)
		}
		if d := e.Decide(shell); d.Action != st.wantAction {
			t.Errorf("%s: Decide(run_shell) = %s; want %s", st.name, d.Action, st.wantAction)
		}
		s := e.Status()
		if s.LastReload != clock || (s.LastError == "") != (st.wantErr == "") {
			t.Errorf("%s: Status() = %+v; want LastReload %v and LastError set: %v", st.name, s, clock, st.wantErr != "")
		}
	}
	s := e.Status()
	if s.Reloads != 2 || s.Failures != 2 || s.Version != v1 || e.Set().Version() != v1 || s.Rules != 1 {
		t.Errorf("Status() = %+v; want 2 reloads, 2 failures, version %s, 1 rule", s, v1)
	}
	if len(events) != len(steps) || !events[1].Changed || events[2].Err == nil {
		t.Errorf("OnReload events = %+v; want one per Reload, the 2nd changed, the 3rd failed", events)
	}
}

func TestNewEngineFailsOnBrokenSet(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "p.yaml"), "rules:\n  - {id: a, action: deny}\n")
	_, err := NewEngine([]string{dir}, EngineOptions{})
	var le *LoadError
	if !errors.As(err, &le) || !strings.Contains(err.Error(), "message is missing") {
		t.Errorf("NewEngine(broken) error = %v; want a *LoadError about the message", err)
	}
}

func TestEngineWatch(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "p.yaml")
	writeFile(t, path, denyShell)
	var mu sync.Mutex
	changes := 0
	e, err := NewEngine([]string{path}, EngineOptions{OnReload: func(ev ReloadEvent) {
		if ev.Changed {
			mu.Lock()
			changes++
			mu.Unlock()
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.Watch(ctx, 5*time.Millisecond); close(done) }()
	writeFile(t, path, "rules: []\n")
	shell := &Input{Call: call("demo__run_shell", `{}`), Now: t0}
	deadline := time.Now().Add(10 * time.Second)
	for e.Decide(shell).Action != ActionAllow {
		if time.Now().After(deadline) {
			t.Fatal("Watch did not pick up the edit within 10s")
		}
		time.Sleep(5 * time.Millisecond) // polling for an async event, not waiting for time
	}
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if changes != 1 {
		t.Errorf("Watch swapped %d times; want 1", changes)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		cfg  Config
		want string
	}{
		{Config{Paths: []string{"p"}, ReloadInterval: "2s"}, ""},
		{Config{}, "policies.paths is empty"},
		{Config{Paths: []string{""}}, "policies.paths[0] is empty"},
		{Config{Paths: []string{"p"}, ReloadInterval: "often"}, "reload_interval \"often\""},
		{Config{Paths: []string{"p"}, CostLimit: 10, CallBudget: 5}, "raise call_budget"},
	}
	for _, tt := range tests {
		err := tt.cfg.Validate()
		if (err == nil) != (tt.want == "") || (err != nil && !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%+v.Validate() = %v; want %q", tt.cfg, err, tt.want)
		}
	}
	var c Config
	err := decodeStrict([]byte("paths: [a]\nreload_intervall: 2s\n"), &c)
	if err == nil || !strings.Contains(err.Error(), "reload_intervall") {
		t.Errorf("decode config with a typo = %v; want an unknown-field error", err)
	}
}

func TestRunTestsReport(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "p.yaml"), denyShell)
	writeFile(t, filepath.Join(dir, "p_test.yaml"), `
cases:
  - name: good
    calls:
      - {tool: demo__read_file, want: allow}
  - name: bad
    calls:
      - {tool: demo__read_file, want: allow}
      - {tool: demo__read_file, want: allow}
      - {tool: demo__run_shell, want: allow}
`)
	var out bytes.Buffer
	ok, err := RunTests([]string{dir}, &out, TestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := "--- FAIL: " + filepath.Join(dir, "p_test.yaml") + `: case "bad": call 3 (demo__run_shell): got deny (rule no-shell), want allow`
	if ok || !strings.Contains(out.String(), want) || !strings.Contains(out.String(), "FAIL\t"+dir+"\t2 cases, 1 failed") {
		t.Errorf("RunTests = %v, output:\n%s\nwant false and a line %q", ok, out.String(), want)
	}

	out.Reset()
	ok, err = RunTests([]string{dir}, &out, TestOptions{Run: "good", Verbose: true})
	if err != nil || !ok || !strings.Contains(out.String(), "ok  \t"+dir+"\t1 cases") || !strings.Contains(out.String(), `--- PASS: `) {
		t.Errorf("RunTests(-run good) = %v, %v, output:\n%s\nwant ok", ok, err, out.String())
	}

	writeFile(t, filepath.Join(dir, "p_test.yaml"), "cases:\n  - {name: x, calls: [{tool: a, want: maybe, extra: 1}]}\n")
	_, err = RunTests([]string{dir}, &out, TestOptions{})
	if err == nil || !strings.Contains(err.Error(), "field extra not found in a call") {
		t.Errorf("RunTests(broken test file) error = %v; want the unknown field named", err)
	}
}

func TestCheck(t *testing.T) {
	if err := Check([]string{"../examples/policies"}); err != nil {
		t.Errorf("Check(examples) = %v; want nil", err)
	}
	if err := Check([]string{"does-not-exist"}); err == nil {
		t.Error("Check(missing path) = nil; want an error")
	}
}
