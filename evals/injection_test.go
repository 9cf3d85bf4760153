package evals

import (
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/toolgate/toolgate/policies"
)

// TestInjectionTagOnTraces measures the prompt-injection detector alone on
// recorded traces: how many results of benign sessions it tags (its false
// positives), and how many attack sessions get a tagged result before
// their harmful call, with the full marker list and with each half of it.
// It runs only when TOOLGATE_EVAL_TRACES names JSONL trace files
// (comma-separated), and reports with -v:
//
//	TOOLGATE_EVAL_TRACES=../shared/evals/agentdojo/traces.jsonl go test -v -run TestInjectionTagOnTraces ./evals/
func TestInjectionTagOnTraces(t *testing.T) {
	paths := os.Getenv("TOOLGATE_EVAL_TRACES")
	if paths == "" {
		t.Skip("set TOOLGATE_EVAL_TRACES to trace files to measure the injection detector on them")
	}
	traces, err := ReadTraces(strings.Split(paths, ",")...)
	if err != nil {
		t.Fatalf("ReadTraces: %v", err)
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for k := range policies.InjectionMarkerWeights {
			if !yield(k) {
				return
			}
		}
	})
	off := func(keep func(i int) bool) map[string]float64 {
		w := map[string]float64{}
		for i, n := range names {
			if !keep(i) {
				w[n] = 0
			}
		}
		return w
	}
	configs := []struct {
		name    string
		weights map[string]float64
	}{
		{"all markers", nil},
		{"even half", off(func(i int) bool { return i%2 == 0 })},
		{"odd half", off(func(i int) bool { return i%2 == 1 })},
	}
	for _, c := range configs {
		d, err := policies.NewDetectors(policies.DetectorConfig{Injection: policies.InjectionDetector{Labels: []string{"*"}, Weights: c.weights}}, nil)
		if err != nil {
			t.Fatalf("NewDetectors: %v", err)
		}
		type count struct{ n, hit int }
		results, benignTraces, caught, anyHit := map[string]*count{}, map[string]*count{}, map[string]*count{}, map[string]*count{}
		markers := map[string]int{}
		add := func(m map[string]*count, hit bool, keys ...string) {
			for _, k := range keys {
				if m[k] == nil {
					m[k] = &count{}
				}
				m[k].n++
				if hit {
					m[k].hit++
				}
			}
		}
		for _, tr := range traces {
			first := -1
			for i, call := range tr.Calls {
				sc := d.ScoreInjection(call.ResultText())
				if sc.Hit && first < 0 {
					first = i
				}
				if tr.Label == LabelBenign {
					add(results, sc.Hit, tr.Suite, tr.Agent(), "all")
					if sc.Hit {
						for _, m := range sc.Markers {
							markers[m]++
						}
						t.Logf("%s: benign %s call %d %s tagged: %v (%.1f)", c.name, tr.ID, i, call.Tool, sc.Markers, sc.Score)
					}
				}
			}
			switch {
			case tr.Label == LabelBenign:
				add(benignTraces, first >= 0, tr.Suite, tr.Agent(), "all")
			case tr.Harmful():
				hit := first >= 0 && first < *tr.HarmfulCallIndex
				add(caught, hit, tr.Suite, tr.Agent(), "all")
			default:
				add(anyHit, first >= 0, tr.Suite, tr.Agent(), "all")
			}
		}
		show := func(m map[string]*count) string {
			keys := make([]string, 0, len(m))
			for k := range m {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			var out []string
			for _, k := range keys {
				out = append(out, fmt.Sprintf("%s %d/%d", k, m[k].hit, m[k].n))
			}
			return strings.Join(out, ", ")
		}
		t.Logf("%s: benign results tagged: %s", c.name, show(results))
		t.Logf("%s: benign traces with a tagged result: %s", c.name, show(benignTraces))
		t.Logf("%s: attack traces with a harmful call, tagged before it: %s", c.name, show(caught))
		t.Logf("%s: attack traces without a harmful call, tagged: %s", c.name, show(anyHit))
		t.Logf("%s: markers on benign hits: %v", c.name, markers)
	}
}
