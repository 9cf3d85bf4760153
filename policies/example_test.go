package policies_test

import (
	"fmt"
	"time"

	"github.com/toolgate/toolgate/policies"
)

func Example() {
	set, err := policies.Compile([]policies.SourceFile{{Name: "egress.yaml", Data: []byte(`
rules:
  - id: no-send-after-secret
    match: {labels: [external_send]}
    when: history.exists(h, "credential" in h.labels)
    action: deny
    message: This session has read a secret, so it may no longer send data out.
`)}}, policies.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	now := time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC)
	d := set.Decide(&policies.Input{
		Call: policies.Call{Server: "demo", Tool: "http_request", Name: "demo__http_request",
			Args: []byte(`{"method":"POST","url":"https://example.com"}`), Labels: []string{"external_send"}},
		History: []policies.HistoryEntry{{Name: "demo__read_secret", Decision: "allow",
			Time: now.Add(-time.Minute), Labels: []string{"credential"}}},
		Now: now,
	})
	fmt.Println(d.Action, d.Rule)
	fmt.Println(d.Message)
	// Output:
	// deny no-send-after-secret
	// This session has read a secret, so it may no longer send data out.
}
