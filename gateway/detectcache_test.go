package gateway

import (
	"fmt"
	"testing"

	"github.com/toolgate/toolgate/policies"
)

func TestDetectCache(t *testing.T) {
	var c detectCache
	st, _ := policies.UnmarshalDetectState(nil)
	raw := st.Marshal()
	c.put("s1", raw, st)
	if got := c.take("s1", append([]byte(nil), raw[:len(raw)-1]...)); got != nil {
		t.Fatal("a state was handed out for other bytes than it was made from")
	}
	if got := c.take("s1", raw); got != nil {
		t.Fatal("a mismatched take must forget the entry")
	}
	c.put("s1", raw, st)
	if got := c.take("s1", raw); got != st {
		t.Fatalf("take = %p; want the state put (%p)", got, st)
	}
	if got := c.take("s1", raw); got != nil {
		t.Fatal("a state was handed out twice: two calls would change one state")
	}
	c.put("s2", nil, st)
	if got := c.take("s2", nil); got != nil {
		t.Fatal("a state without bytes was kept")
	}

	c = detectCache{max: 8}
	for i := range 100 {
		c.put(fmt.Sprint(i), raw, st)
	}
	if n := len(c.entries); n != 8 {
		t.Errorf("cache holds %d sessions; want its bound 8", n)
	}
}
