package sessions

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"
	"unicode/utf8"
)

func TestEntryRoundTrip(t *testing.T) {
	created := time.UnixMilli(1_700_000_000_000)
	tests := []CallRecord{
		{Server: "files", Tool: "read_file", Name: "files__read_file", Decision: "allow"},
		{Server: "files", Tool: "read_file", Name: "alias__read", Decision: "deny", Args: json.RawMessage(`{"a":[1,{"b":"]},\"["}]}`)},
		{Server: `we"ird,[srv]`, Tool: "t\\x\n", Name: "n<>&", Decision: "", Labels: []string{"a,b", `"q"`, "ü"},
			Rules: []string{"r]1"}, ResultTags: []string{"x"}},
		{Server: "", Tool: "", Name: "__", Args: json.RawMessage(`"just a string"`)},
		{Server: "s", Tool: "t", Name: "s__t", Args: json.RawMessage(`0`), ResultTags: []string{"tag"}},
		{Server: "s", Tool: "t", Name: "s__t", Args: json.RawMessage(`[]`), Labels: []string{""}},
	}
	for i, rec := range tests {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			rec.Time = created.Add(time.Duration(i) * 1234 * time.Millisecond)
			e := "[" + fmt.Sprint(rec.Time.UnixMilli()-created.UnixMilli()) + encodeEntry(rec)
			if !json.Valid([]byte(e)) {
				t.Fatalf("encodeEntry(%+v) = %s; not valid JSON", rec, e)
			}
			got, err := decodeEntry(e, created.UnixMilli(), nil)
			if err != nil {
				t.Fatalf("decodeEntry(%s) error: %v", e, err)
			}
			want := rec
			if string(want.Args) == "0" {
				want.Args = nil // 0 is the empty marker; the store never writes a bare 0 as args
			}
			gj, _ := json.Marshal(got)
			wj, _ := json.Marshal(want)
			if string(gj) != string(wj) {
				t.Errorf("decodeEntry(%s) = %s; want %s", e, gj, wj)
			}
		})
	}
}

func TestDecodeEntryRejects(t *testing.T) {
	for _, e := range []string{"", "[]", "x", `[1,"a`, `["t"]`, `[1,"a",{]`, `[1,"a"}`} {
		if _, err := decodeEntry(e, 0, nil); err == nil {
			t.Errorf("decodeEntry(%q) succeeded; want an error", e)
		}
	}
}

func FuzzEntry(f *testing.F) {
	f.Add("files", "read", `{"p":"x"}`, "allow")
	f.Fuzz(func(t *testing.T, server, tool, args, decision string) {
		if !utf8.ValidString(server) || !utf8.ValidString(tool) || !utf8.ValidString(decision) {
			t.Skip("names come from decoded JSON, which is valid UTF-8")
		}
		rec := CallRecord{Server: server, Tool: tool, Name: server + "__" + tool, Decision: decision}
		if json.Valid([]byte(args)) {
			n, err := normalizeRecord(CallRecord{Name: "x", Args: json.RawMessage(args)}, time.UnixMilli(0))
			if err == nil {
				rec.Args = n.Args
			}
		}
		e := "[5" + encodeEntry(rec)
		got, err := decodeEntry(e, 0, nil)
		if err != nil {
			t.Fatalf("decodeEntry(%s) error: %v", e, err)
		}
		if got.Server != rec.Server || got.Tool != rec.Tool || got.Decision != decision || got.Name != rec.Name {
			t.Fatalf("round trip of %+v gave %+v", rec, got)
		}
	})
}

// TestDecodeHistorySharing checks that sharing names, labels and rules
// with the entry before gives the same records as decoding each alone,
// including when an entry has none of them between two that do.
func TestDecodeHistorySharing(t *testing.T) {
	created := time.UnixMilli(1_700_000_000_000)
	recs := []CallRecord{
		{Server: "s", Tool: "t", Labels: []string{"a"}, Rules: []string{"r"}, Decision: "allow"},
		{Server: "s", Tool: "t", Labels: []string{"a"}, Rules: []string{"r"}, Decision: "allow"},
		{Server: "s", Tool: "t", Decision: "allow"},
		{Server: "s", Tool: "t", Labels: []string{"a"}, Decision: "deny"},
		{Server: "s", Tool: "u", Labels: []string{"b"}, Rules: []string{"r"}, ResultTags: []string{"x"}},
		{Server: "s", Tool: "u", Labels: []string{"b"}, Rules: []string{"r"}, ResultTags: []string{"x"}},
		// A name of its own, then the same tool under its usual name.
		{Server: "s", Tool: "u", Name: "alias", Decision: "allow"},
		{Server: "s", Tool: "u", Decision: "allow"},
	}
	var entries []string
	for i := range recs {
		if recs[i].Name == "" {
			recs[i].Name = recs[i].Server + "__" + recs[i].Tool
		}
		recs[i].Time = created.Add(time.Duration(i) * time.Millisecond)
		entries = append(entries, "["+fmt.Sprint(i)+encodeEntry(recs[i]))
	}
	s := &Session{Created: created, Calls: int64(len(recs))}
	if err := decodeHistory(s, entries); err != nil {
		t.Fatal(err)
	}
	for i, e := range entries {
		alone, err := decodeEntry(e, created.UnixMilli(), nil)
		if err != nil {
			t.Fatal(err)
		}
		alone.Seq = s.History[i].Seq
		gj, _ := json.Marshal(s.History[i])
		wj, _ := json.Marshal(alone)
		if string(gj) != string(wj) {
			t.Errorf("decodeHistory entry %d = %s; want %s", i, gj, wj)
		}
	}
}

// encodeEntryJSON is encodeEntry written with encoding/json for every item: encodeEntry
// writes the same bytes without it.
func encodeEntryJSON(rec CallRecord) string {
	str := func(s string) []byte { j, _ := json.Marshal(s); return j }
	list := func(l []string) []byte {
		if len(l) == 0 {
			return []byte("0")
		}
		j, _ := json.Marshal(l)
		return j
	}
	name := rec.Name
	if name == rec.Server+"__"+rec.Tool {
		name = ""
	}
	args := []byte(rec.Args)
	if len(args) == 0 {
		args = []byte("0")
	}
	items := [][]byte{str(rec.Server), str(rec.Tool), str(rec.Decision), args, str(name),
		list(rec.Labels), list(rec.Rules), list(rec.ResultTags)}
	for len(items) > 0 {
		if last := string(items[len(items)-1]); last != "0" && last != `""` {
			break
		}
		items = items[:len(items)-1]
	}
	out := ""
	for _, it := range items {
		out += "," + string(it)
	}
	return out + "]"
}

func TestEncodeEntryMatchesJSON(t *testing.T) {
	tests := []CallRecord{
		{},
		{Server: "files"},
		{Server: "files", Tool: "read_file", Name: "files__read_file", Decision: "allow"},
		{Server: "files", Tool: "read_file", Name: "files__read_file", Args: json.RawMessage(`""`)},
		{Server: "files", Tool: "read_file", Name: "files__read_file", Args: json.RawMessage(`0`), Rules: []string{"r"}},
		{Server: "files", Tool: "read_file", Name: "alias", Args: json.RawMessage(`{"p":"/x"}`)},
		{Server: `we"ird`, Tool: "t\\x\n", Name: "n<>&", Labels: []string{"a,b", `"q"`, "ü", ""}, Rules: []string{"r]1"}},
		{Server: "s", Tool: "t", Name: "s__t", ResultTags: []string{"tag", "\u2028"}},
		{Server: "s", Tool: "t", Name: "s__t", Labels: []string{"x"}, Rules: []string{}},
		{Decision: "deny", Args: json.RawMessage(`[1]`), Name: "__"},
		{Name: "\xff", Decision: "\x7f"},
	}
	for _, rec := range tests {
		if got, want := encodeEntry(rec), encodeEntryJSON(rec); got != want {
			t.Errorf("encodeEntry(%+v) = %s; want %s", rec, got, want)
		}
	}
}
