package policies

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// genPack writes n rules of the kinds a real pack holds: filtered by tool
// or label, reading arguments, scanning history.
func genPack(n int) []byte {
	var b strings.Builder
	b.WriteString("rules:\n")
	for i := range n {
		action := "deny"
		if i%10 == 2 {
			action = "revoke"
		}
		fmt.Fprintf(&b, "  - id: r%d\n    action: %s\n    message: rule %d\n", i, action, i)
		switch i % 10 {
		case 0:
			fmt.Fprintf(&b, "    match: {tools: [\"demo__tool%d\"]}\n    when: call.args.path.startsWith(\"/etc\")\n", i)
		case 1:
			b.WriteString("    match: {labels: [external_send]}\n    when: history.sequence([\"*__read_secret\", \"*__list_*\"])\n")
		case 2:
			b.WriteString("    when: history.countSince(duration(\"10m\"), \"*\", \"deny\") >= 3\n")
		case 3:
			fmt.Fprintf(&b, "    when: call.name == \"demo__x%d\" && session.profile == \"ci\"\n", i)
		case 4:
			b.WriteString("    match: {tools: [demo__http_request]}\n    when: is_private_ip(url_host(call.args.url))\n")
		case 5:
			b.WriteString("    when: '\"demo__*\".glob(call.name) && call.args.size() > 20'\n")
		case 6:
			b.WriteString("    match: {tools: [demo__deploy]}\n    when: call.args.environment == \"production\" && !in_window(now, \"Europe/Berlin\", \"Mon-Fri\", \"09:00\", \"17:00\")\n")
		case 7:
			fmt.Fprintf(&b, "    when: session.risk > 0.%d && \"%d\" in session.labels\n", 5+i%4, i)
		case 8:
			b.WriteString("    match: {tools: [demo__run_shell]}\n    when: call.args.command.matches(\"(?i)rm\\\\s+-rf|drop\\\\s+table\")\n")
		case 9:
			b.WriteString("    mode: shadow\n    when: history.exists(h, \"credential\" in h.labels) && \"external_send\" in call.labels\n")
		}
	}
	return []byte(b.String())
}

func benchInput() *Input {
	hist := make([]HistoryEntry, 100)
	names := []string{"demo__read_file", "demo__list_files", "demo__slow_count", "demo__read_secret"}
	for i := range hist {
		n := names[i%len(names)]
		var labels []string
		if n == "demo__read_secret" {
			labels = []string{"credential"}
		}
		hist[i] = HistoryEntry{Server: "demo", Tool: strings.TrimPrefix(n, "demo__"), Name: n,
			Args: []byte(`{"path":"/srv/data/file.txt"}`), Decision: "allow", Time: t0.Add(time.Duration(i-100) * time.Second), Labels: labels}
	}
	return &Input{
		Call:    call("demo__http_request", `{"method":"POST","url":"https://api.example.com/upload","body":"hello"}`, "external_send"),
		Session: Session{ID: "s", Profile: "dev", Started: t0.Add(-time.Hour), Expires: t0.Add(time.Hour), Calls: 100, Risk: 0.1, Scope: []string{"demo__*"}},
		History: hist,
		Now:     t0,
	}
}

// BenchmarkDecide50Rules100History reports the decision time of a 50-rule
// pack with a 100-call history, with p50 and p99 from per-op samples.
func BenchmarkDecide50Rules100History(b *testing.B) {
	set, err := Compile([]SourceFile{{Name: "bench.yaml", Data: genPack(50)}}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	in := benchInput()
	if d := set.Decide(in); len(d.Errors) > 0 {
		b.Fatalf("Decide errors: %+v", d.Errors)
	}
	samples := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		start := time.Now()
		set.Decide(in)
		samples = append(samples, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(samples)
	if len(samples) > 0 {
		b.ReportMetric(float64(samples[len(samples)/2].Nanoseconds())/1e3, "p50-µs")
		b.ReportMetric(float64(samples[len(samples)*99/100].Nanoseconds())/1e3, "p99-µs")
	}
}

// BenchmarkDecide50RulesFullHistory is the gateway bench's case: a session
// at the default history limit (256 calls) of one external_send tool, so
// that no history scan stops early.
func BenchmarkDecide50RulesFullHistory(b *testing.B) {
	set, err := Compile([]SourceFile{{Name: "bench.yaml", Data: genPack(50)}}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	in := benchInput()
	in.History = make([]HistoryEntry, 256)
	for i := range in.History {
		in.History[i] = HistoryEntry{Server: "demo", Tool: "echo", Name: "demo__echo", Args: []byte(`{"message":"hello"}`),
			Decision: "allow", Time: t0.Add(time.Duration(i-256) * time.Millisecond), Labels: []string{"external_send"}}
	}
	if d := set.Decide(in); len(d.Errors) > 0 {
		b.Fatalf("Decide errors: %+v", d.Errors)
	}
	samples := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		start := time.Now()
		set.Decide(in)
		samples = append(samples, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(samples)
	if len(samples) > 0 {
		b.ReportMetric(float64(samples[len(samples)/2].Nanoseconds())/1e3, "p50-µs")
		b.ReportMetric(float64(samples[len(samples)*99/100].Nanoseconds())/1e3, "p99-µs")
	}
}

// BenchmarkDecide50RulesFullHistoryNext is the live case of
// BenchmarkDecide50RulesFullHistory: the same session decided call after
// call, each time with one new entry appended to its full history and the
// oldest dropped.
func BenchmarkDecide50RulesFullHistoryNext(b *testing.B) {
	set, err := Compile([]SourceFile{{Name: "bench.yaml", Data: genPack(50)}}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	in := benchInput()
	const limit = 256
	buf := make([]HistoryEntry, 0, 4*limit)
	var seq int64
	next := func() {
		if len(buf) == cap(buf) {
			buf = buf[:copy(buf, buf[len(buf)-limit+1:])]
		}
		seq++
		buf = append(buf, HistoryEntry{Server: "demo", Tool: "echo", Name: "demo__echo", Args: []byte(`{"message":"hello"}`),
			Decision: "allow", Time: t0.Add(time.Duration(seq) * time.Millisecond), Labels: []string{"external_send"}, Seq: seq})
		in.History = buf[max(0, len(buf)-limit):]
	}
	for range limit {
		next()
	}
	if d := set.Decide(in); len(d.Errors) > 0 {
		b.Fatalf("Decide errors: %+v", d.Errors)
	}
	samples := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		next()
		start := time.Now()
		set.Decide(in)
		samples = append(samples, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(samples)
	if len(samples) > 0 {
		b.ReportMetric(float64(samples[len(samples)/2].Nanoseconds())/1e3, "p50-µs")
		b.ReportMetric(float64(samples[len(samples)*99/100].Nanoseconds())/1e3, "p99-µs")
	}
}

// BenchmarkCompile500Rules reports the time to compile a 500-rule pack.
func BenchmarkCompile500Rules(b *testing.B) {
	data := genPack(500)
	for b.Loop() {
		if _, err := Compile([]SourceFile{{Name: "bench.yaml", Data: data}}, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}
