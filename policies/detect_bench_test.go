package policies

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// benchSession plays a 256-call session with every detector on: reads of
// untrusted mail and private records (about 1 KiB of text each), lookups,
// and sends. It returns the detectors, the state and the next call.
func benchSession(tb testing.TB) (*Detectors, *DetectState, *Input) {
	tb.Helper()
	var tr []BaselineTrace
	tr = append(tr, traces("p", 10, "m__read", "crm__find", "m__send")...)
	d := mustDetectors(tb, DetectorConfig{}, LearnBaseline(tr))
	st := &DetectState{}
	body := strings.Repeat("Dear team, the quarterly figures are attached and the review meeting moves to Thursday afternoon. ", 10)
	hist := make([]HistoryEntry, 0, 256)
	for i := range 256 {
		var c Call
		var res string
		switch i % 4 {
		case 0:
			c = call("m__read", fmt.Sprintf(`{"id":%d}`, i), "untrusted_content")
			res = fmt.Sprintf("from: peer%d@partner.example\nsubject: update %d\nbody: %s", i, i, body)
		case 1:
			c = call("crm__find", fmt.Sprintf(`{"q":"client %d"}`, i), "private_data")
			res = fmt.Sprintf("name: Client %d\nemail: c%d@client.example\naccount: DE89370400440532%06d", i, i, i)
		case 2:
			c = call("crm__list", `{}`)
			res = fmt.Sprintf("- owner%d@corp.example\n- https://files%d.corp.example/share", i, i)
		default:
			c = call("m__send", fmt.Sprintf(`{"to":["owner%d@corp.example"],"subject":"re","body":"thanks, noted for Thursday"}`, i-1), "external_send")
		}
		in := Input{Call: c, Session: Session{ID: "s", Profile: "p"}, History: hist, Now: t0.Add(time.Duration(i) * 10 * time.Second)}
		in.Flags, in.Session.Risk = d.Inspect(st, &in)
		d.Record(st, &in, ActionAllow)
		tags := d.ObserveResult(st, c, res, c.Labels, in.Now)
		hist = append(hist, HistoryEntry{Server: c.Server, Tool: c.Tool, Name: c.Name, Args: c.Args, Decision: "allow", Time: in.Now, Labels: c.Labels, ResultTags: tags})
	}
	next := &Input{
		Call:    call("m__send", `{"to":["owner254@corp.example","new@elsewhere.example"],"subject":"fwd","body":"the review meeting moves to Thursday afternoon, see account DE89370400440532000001"}`, "external_send"),
		Session: Session{ID: "s", Profile: "p"}, History: hist, Now: t0.Add(2561 * 10 * time.Second),
	}
	return d, st, next
}

// BenchmarkDetectInspectRecord reports the time the detectors add to one
// decision (Inspect before, Record after) at a 256-call history, with p50
// and p99, and the encoded state size.
func BenchmarkDetectInspectRecord(b *testing.B) {
	d, st, in := benchSession(b)
	flags, _ := d.Inspect(st, in)
	if len(flags) == 0 {
		b.Fatalf("Inspect flagged nothing; the benchmark call should exercise every detector")
	}
	blob := st.Marshal()
	samples := make([]time.Duration, 0, 1<<16)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		s := *st // Record appends; work on a shallow copy of a fixed state
		s.recent = slices.Clip(s.recent)
		s.known = slices.Clip(s.known)
		start := time.Now()
		in.Flags, in.Session.Risk = d.Inspect(&s, in)
		d.Record(&s, in, ActionAllow)
		samples = append(samples, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(samples)
	b.ReportMetric(float64(samples[len(samples)/2].Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(samples[len(samples)*99/100].Nanoseconds())/1e3, "p99-µs")
	b.ReportMetric(float64(len(blob)), "state-bytes")
	b.ReportMetric(float64(st.Taint().Len()), "fingerprints")
}

// BenchmarkDetectStateCodec reports decoding plus encoding the state of a
// 256-call session, which the gateway does once per call.
func BenchmarkDetectStateCodec(b *testing.B) {
	_, st, _ := benchSession(b)
	blob := st.Marshal()
	b.ReportAllocs()
	for b.Loop() {
		s, err := UnmarshalDetectState(blob)
		if err != nil {
			b.Fatal(err)
		}
		blob = s.Marshal()
	}
	b.ReportMetric(float64(len(blob)), "state-bytes")
}

// BenchmarkDetectObserveResult reports fingerprinting one 1 KiB untrusted
// result (after the call, off the decision path).
func BenchmarkDetectObserveResult(b *testing.B) {
	d, st, _ := benchSession(b)
	res := "from: x@partner.example\nbody: " + strings.Repeat("Please review the attached figures before the Thursday meeting with the board. ", 13)
	c := call("m__read", `{}`, "untrusted_content")
	b.ReportAllocs()
	for b.Loop() {
		s := *st
		s.taint.fps = slices.Clone(st.taint.fps)
		s.taint.sources = slices.Clone(st.taint.sources)
		s.known = slices.Clone(st.known)
		d.ObserveResult(&s, c, res, c.Labels, t0)
	}
}
