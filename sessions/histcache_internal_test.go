package sessions

import (
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"
)

// Commits move a cached history on in place: it holds the last limit records in order, records
// handed out earlier never change, and the room it keeps follows what it holds (a doubling
// while short of the limit, a quarter of the limit once full), not the limit alone.
func TestHistCacheCommittedCapacity(t *testing.T) {
	for _, limit := range []int{1, 10, 100, 256} {
		c := newHistCache(1 << 20)
		created := time.UnixMilli(1_700_000_000_000)
		view := &Session{ID: "s", Created: created, HistoryLimit: limit, Version: 1}
		c.put("s", created.UnixMilli(), 0, nil, view)
		var held [][]CallRecord // what readers got along the way
		for seq := int64(1); seq <= int64(3*limit+40); seq++ {
			after := &Session{ID: "s", Created: created, HistoryLimit: limit, Version: seq + 1}
			c.committed("s", seq, CallRecord{Seq: seq, Name: "t"}, after)
			_, recs, ok := c.recent("s")
			if !ok {
				t.Fatalf("limit %d: recent after commit %d: no view", limit, seq)
			}
			if want := min(int(seq), limit); len(recs) != want {
				t.Fatalf("limit %d: after commit %d, %d records; want %d", limit, seq, len(recs), want)
			}
			for i, r := range recs {
				if want := seq - int64(len(recs)) + 1 + int64(i); r.Seq != want {
					t.Fatalf("limit %d: after commit %d, record %d has seq %d; want %d", limit, seq, i, r.Seq, want)
				}
			}
			el := c.byID["s"]
			s := el.Value.(*histSlot)
			room := limit + max(16, limit/4)
			if len(s.recs) < limit {
				room = max(16, 2*len(s.recs))
			}
			if cap(s.recs) > room {
				t.Fatalf("limit %d: after commit %d, cap %d for %d records", limit, seq, cap(s.recs), len(s.recs))
			}
			if c.entries != len(s.recs) {
				t.Fatalf("limit %d: after commit %d, entries = %d; want %d", limit, seq, c.entries, len(s.recs))
			}
			held = append(held, recs)
		}
		for _, recs := range held {
			for i, r := range recs {
				if want := recs[0].Seq + int64(i); r.Seq != want {
					t.Fatalf("limit %d: a history handed out changed: record %d has seq %d; want %d", limit, i, r.Seq, want)
				}
			}
		}
	}
}

// The arguments a commit keeps (in the store and in the replica's history cache) are compacted
// into a copy no larger than the arguments given, and never share their bytes.
func TestNormalizeRecordArgs(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{`{"message":"hello"}`, `{"message":"hello"}`},
		{`{ "path" : "/etc/hosts" }`, `{"path":"/etc/hosts"}`},
		{`{"q":"` + strings.Repeat("x", 300) + `"}`, `{"q":"` + strings.Repeat("x", 300) + `"}`},
		{`null`, ``},
	} {
		in := []byte(tt.in)
		got, err := normalizeRecord(CallRecord{Name: "t", Args: in}, time.UnixMilli(0))
		if err != nil {
			t.Fatalf("normalizeRecord(%s): %v", tt.in, err)
		}
		if string(got.Args) != tt.want {
			t.Errorf("normalizeRecord(%s).Args = %s; want %s", tt.in, got.Args, tt.want)
		}
		if cap(got.Args) > len(tt.in) {
			t.Errorf("normalizeRecord(%s): cap(Args) = %d; want at most %d", tt.in, cap(got.Args), len(tt.in))
		}
		if len(got.Args) > 0 && &got.Args[0] == &in[0] {
			t.Errorf("normalizeRecord(%s).Args shares the caller's bytes", tt.in)
		}
	}
}

// A commit's record shares the names and lists of the record before it when they are equal,
// and keeps its own when they differ; result tags are never shared.
func TestHistCacheCommittedShares(t *testing.T) {
	c := newHistCache(1 << 10)
	created := time.UnixMilli(1_700_000_000_000)
	c.put("s", created.UnixMilli(), 0, nil, &Session{ID: "s", Created: created, HistoryLimit: 8, Version: 1})
	// Each record gets its own copies, as a commit's normalized record has.
	rec := func(seq int64, name string, labels ...string) CallRecord {
		return CallRecord{Seq: seq, Server: strings.Clone("files"), Tool: strings.Clone(name), Name: "files__" + name,
			Labels: slices.Clone(labels), ResultTags: []string{"t"}}
	}
	for i, r := range []CallRecord{rec(1, "read", "private_data"), rec(2, "read", "private_data"), rec(3, "send", "external_send")} {
		c.committed("s", int64(i+1), r, &Session{ID: "s", Created: created, HistoryLimit: 8, Version: int64(i + 2)})
	}
	_, recs, ok := c.recent("s")
	if !ok || len(recs) != 3 {
		t.Fatalf("recent = %d records, %v; want 3, true", len(recs), ok)
	}
	same := func(a, b string) bool { return unsafe.StringData(a) == unsafe.StringData(b) }
	if !same(recs[0].Name, recs[1].Name) || !same(recs[0].Server, recs[1].Server) || &recs[0].Labels[0] != &recs[1].Labels[0] {
		t.Errorf("records 1 and 2 do not share their equal name, server and labels")
	}
	if same(recs[1].Name, recs[2].Name) || &recs[1].Labels[0] == &recs[2].Labels[0] || recs[2].Labels[0] != "external_send" {
		t.Errorf("record 3 = %+v; want its own name and labels", recs[2])
	}
	if !same(recs[1].Server, recs[2].Server) {
		t.Errorf("record 3 does not share its server with record 2")
	}
	if &recs[0].ResultTags[0] == &recs[1].ResultTags[0] {
		t.Errorf("records 1 and 2 share their result tags")
	}
}
