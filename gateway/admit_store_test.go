package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/policies"
	"github.com/toolgate/toolgate/sessions"
	"github.com/toolgate/toolgate/sessions/sessionstest"
	"github.com/toolgate/toolgate/tools"
)

// admitTools is the catalog of the decider tests: a trusted read, a read
// of untrusted content (its results get a result tag), and a send.
var admitTools = map[string]tools.Tool{
	"files__read": {Name: "files__read", Server: "files", Upstream: "read"},
	"web__fetch":  {Name: "web__fetch", Server: "web", Upstream: "fetch", Labels: []string{policies.LabelUntrustedContent}},
	"mail__send":  {Name: "mail__send", Server: "mail", Upstream: "send", Labels: []string{policies.LabelExternalSend}},
}

// admitRules read what another replica may change between two calls: the
// history's result tags, the session's labels and its scope.
const admitRules = `
rules:
  - id: no-send-after-untrusted
    match: {labels: [external_send]}
    when: history.exists(h, "untrusted_content" in h.result_tags)
    action: deny
    message: This session has read untrusted content, so it may not send.
  - id: no-send-when-tainted
    match: {labels: [external_send]}
    when: '"tainted" in session.labels'
    action: deny
    message: This session is tainted, so it may not send.
`

// newAdmitDecider returns a decider on store with admitRules and, when
// detect is set, the call-chain detectors (which tag untrusted results).
func newAdmitDecider(tb testing.TB, store sessions.Store, detect bool) *gateway.Decider {
	tb.Helper()
	set, err := policies.Compile([]policies.SourceFile{{Name: "admit.yaml", Data: []byte(admitRules)}}, policies.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	d := &gateway.Decider{Store: store, Policy: set,
		Tool: func(name string) (tools.Tool, bool) { t, ok := admitTools[name]; return t, ok }}
	if detect {
		det, err := policies.NewDetectors(policies.DetectorConfig{}, nil)
		if err != nil {
			tb.Fatal(err)
		}
		d.Detectors = func(string) *policies.Detectors { return det }
	}
	return d
}

func admitSpec() sessions.Spec {
	return sessions.Spec{Agent: "agent-1", Profile: "p", Scope: []string{"*"}, Lifetime: time.Hour}
}

// admitObserve admits one call and, when it goes, observes result.
func admitObserve(tb testing.TB, d *gateway.Decider, id, name, result string) gateway.Outcome {
	tb.Helper()
	ctx := context.Background()
	out, err := d.Admit(ctx, gateway.Call{SessionID: id, Name: name, Args: json.RawMessage(`{"path":"/a"}`)})
	if err != nil {
		tb.Fatalf("Admit(%s) error: %v", name, err)
	}
	if out.Forward {
		if _, err := d.Observe(ctx, id, out, result); err != nil {
			tb.Fatalf("Observe(%s) error: %v", name, err)
		}
	}
	return out
}

// A change made through another replica between two calls is seen by the
// second call's decision, although the first left this replica a view of
// the session to decide on without reading it: a decision on a stale view
// does not commit, and the call is decided again on the session as the
// store holds it. With no change, the call costs one request.
func TestAdmitSeesOtherReplicas(t *testing.T) {
	srv := sessionstest.StartRedis(t)
	ctx := context.Background()
	commitOther := func(other sessions.Store, id string, rec sessions.CallRecord, eff sessions.Effects) error {
		snap, err := other.Snapshot(ctx, id)
		if err != nil {
			return err
		}
		_, err = other.Commit(ctx, id, snap.Version, rec, eff)
		return err
	}
	fetch := sessions.CallRecord{Server: "web", Tool: "fetch", Name: "web__fetch", Decision: "allow"}
	for _, tc := range []struct {
		name   string
		change func(other sessions.Store, id string) error
		// what the send is: "allow", "deny" (outside the scope), "ended",
		// or the id of the rule that denies it
		want string
	}{
		{"nothing", func(sessions.Store, string) error { return nil }, "allow"},
		{"result tags", func(other sessions.Store, id string) error {
			return other.Annotate(ctx, id, 0, 2, []string{policies.LabelUntrustedContent}, nil)
		}, "no-send-after-untrusted"},
		{"commit", func(other sessions.Store, id string) error {
			rec := fetch
			rec.ResultTags = []string{policies.LabelUntrustedContent}
			return commitOther(other, id, rec, sessions.Effects{})
		}, "no-send-after-untrusted"},
		{"labels", func(other sessions.Store, id string) error {
			return commitOther(other, id, fetch, sessions.Effects{AddLabels: []string{"tainted"}})
		}, "no-send-when-tainted"},
		{"narrowed", func(other sessions.Store, id string) error {
			_, err := other.Narrow(ctx, id, []string{"mail__*"})
			return err
		}, "deny"},
		{"revoked", func(other sessions.Store, id string) error {
			_, err := other.Revoke(ctx, id, "incident")
			return err
		}, "ended"},
		{"frozen", func(other sessions.Store, id string) error {
			_, err := other.Freeze(ctx, id, "review")
			return err
		}, "ended"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prefix := sessionstest.Prefix()
			c := srv.Client()
			rt := &roundTrips{}
			c.AddHook(rt)
			here := sessions.NewRedis(c, sessions.RedisOptions{Prefix: prefix})
			other := sessions.NewRedis(srv.Client(), sessions.RedisOptions{Prefix: prefix})
			d := newAdmitDecider(t, here, false)
			s, _, err := here.Create(ctx, admitSpec())
			if err != nil {
				t.Fatal(err)
			}
			admitObserve(t, d, s.ID, "files__read", "ok")
			admitObserve(t, d, s.ID, "files__read", "ok")
			if err := tc.change(other, s.ID); err != nil {
				t.Fatal(err)
			}
			if view, ok := here.Recent(s.ID); !ok {
				t.Fatal("no view of the session after two calls; want one to decide on")
			} else if cur, err := other.Get(ctx, s.ID); err != nil {
				t.Fatal(err)
			} else if tc.name != "nothing" && view.Version == cur.Version {
				t.Fatalf("view at version %d after the change; want it stale", view.Version)
			}
			before := rt.n.Load()
			out, err := d.Admit(ctx, gateway.Call{SessionID: s.ID, Name: "mail__send", Args: json.RawMessage(`{"to":"x"}`)})
			got := "allow"
			switch {
			case errors.Is(err, gateway.ErrSessionEnded):
				got = "ended"
			case err != nil:
				t.Fatalf("Admit(mail__send) error: %v", err)
			case !out.Forward && out.Decision.Rule != "":
				got = out.Decision.Rule
			case !out.Forward:
				got = string(out.Decision.Action)
			}
			if got != tc.want {
				t.Errorf("Admit(mail__send) after %s = %s (%+v); want %s", tc.name, got, out.Decision, tc.want)
			}
			if n := rt.n.Load() - before; tc.name == "nothing" && n != 1 {
				t.Errorf("Admit on an unchanged session sent %d requests; want 1 (the commit)", n)
			}
		})
	}
}

// Observe stores nothing, and leaves the session's version, when the
// result gets no tags and the detectors' state stays as it was.
func TestObserveSkipsEmptyAnnotation(t *testing.T) {
	ctx := context.Background()
	store := sessions.NewMemory(sessions.Options{})
	d := newAdmitDecider(t, store, true)
	s, _, err := store.Create(ctx, admitSpec())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		tool, result string
		tags         []string
		bump         bool
	}{
		{"files__read", "ok", nil, false},
		{"files__read", "write to bob@example.com next", nil, true}, // a destination becomes known
		{"web__fetch", "words from the web", []string{policies.LabelUntrustedContent}, true},
		{"files__read", "ok", nil, false},
	} {
		out, err := d.Admit(ctx, gateway.Call{SessionID: s.ID, Name: tc.tool, Args: json.RawMessage(`{}`)})
		if err != nil || !out.Forward {
			t.Fatalf("Admit(%s) = %+v, %v; want forwarded", tc.tool, out.Decision, err)
		}
		tags, err := d.Observe(ctx, s.ID, out, tc.result)
		if err != nil {
			t.Fatal(err)
		}
		after, err := store.Get(ctx, s.ID)
		if err != nil {
			t.Fatal(err)
		}
		if bumped := after.Version != out.Session.Version; bumped != tc.bump || !slices.Equal(tags, tc.tags) {
			t.Errorf("Observe(%s, %q) = tags %v, new version %v; want tags %v, new version %v",
				tc.tool, tc.result, tags, bumped, tc.tags, tc.bump)
		}
	}
}

// redisStats reads counters of a redis-server: calls per command
// ("cmdstat_evalsha" ...), the time they took ("cmdstat_evalsha_usec"), and
// total_net_input_bytes/total_net_output_bytes.
func redisStats(tb testing.TB, c *redis.Client) map[string]int64 {
	tb.Helper()
	out := map[string]int64{}
	for _, section := range []string{"commandstats", "stats"} {
		info, err := c.Info(context.Background(), section).Result()
		if err != nil {
			tb.Fatal(err)
		}
		for _, line := range strings.Split(info, "\r\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			if strings.HasPrefix(k, "cmdstat_") {
				calls, rest, _ := strings.Cut(strings.TrimPrefix(v, "calls="), ",")
				out[k], _ = strconv.ParseInt(calls, 10, 64)
				usec, _, _ := strings.Cut(strings.TrimPrefix(rest, "usec="), ",")
				out[k+"_usec"], _ = strconv.ParseInt(usec, 10, 64)
			} else if k == "total_net_input_bytes" || k == "total_net_output_bytes" {
				out[k], _ = strconv.ParseInt(v, 10, 64)
			}
		}
	}
	return out
}

// BenchmarkAdmitObserveRedis measures one tools/call's work on the Redis
// store (Decider.Admit, then Observe of the result) for a session whose
// 256-entry history is full, and reports what it costs Redis per call:
// requests (a pipeline counts once), scripts run (EVALSHA) and the time
// Redis spent in them, and bytes sent each way.
// "trusted" results change nothing; "untrusted" ones get a result tag.
func BenchmarkAdmitObserveRedis(b *testing.B) {
	for _, tc := range []struct{ name, tool, result string }{
		{"trusted", "files__read", "ok"},
		{"untrusted", "web__fetch", "Some page text that came from the web, with words enough to fingerprint."},
	} {
		b.Run(tc.name, func(b *testing.B) {
			srv := sessionstest.StartRedis(b)
			if !srv.Own {
				b.Skip("needs its own redis-server to count its commands")
			}
			c := srv.Client()
			rt := &roundTrips{}
			c.AddHook(rt)
			d := newAdmitDecider(b, sessions.NewRedis(c, sessions.RedisOptions{Prefix: sessionstest.Prefix()}), true)
			s, _, err := d.Store.Create(context.Background(), admitSpec())
			if err != nil {
				b.Fatal(err)
			}
			for range sessions.DefaultHistoryLimit {
				admitObserve(b, d, s.ID, tc.tool, tc.result)
			}
			if err := c.ConfigResetStat(context.Background()).Err(); err != nil {
				b.Fatal(err)
			}
			before := redisStats(b, c)
			trips := rt.n.Load()
			n := 0
			for b.Loop() {
				admitObserve(b, d, s.ID, tc.tool, tc.result)
				n++
			}
			trips = rt.n.Load() - trips
			after := redisStats(b, c)
			per := func(v int64) float64 { return float64(v) / float64(n) }
			b.ReportMetric(per(after["cmdstat_evalsha"]-before["cmdstat_evalsha"]), "evalsha/call")
			b.ReportMetric(per(after["cmdstat_evalsha_usec"]-before["cmdstat_evalsha_usec"]), "script-µs/call")
			b.ReportMetric(per(trips), "roundtrips/call")
			b.ReportMetric(per(after["total_net_input_bytes"]-before["total_net_input_bytes"]), "sent-B/call")
			b.ReportMetric(per(after["total_net_output_bytes"]-before["total_net_output_bytes"]), "recv-B/call")
		})
	}
}

// roundTrips counts the requests a go-redis client sends: each command
// alone, or each pipeline as one.
type roundTrips struct{ n atomic.Int64 }

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmds)
	}
}
