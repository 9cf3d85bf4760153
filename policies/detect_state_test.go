package policies

import (
	"bytes"
	"strings"
	"testing"
)

// TestDetectStateMarshalSize checks that Marshal allocates its encoding at
// the exact size, that AppendMarshal appends the same bytes, and that the
// encoding decodes to a state that encodes the same.
func TestDetectStateMarshalSize(t *testing.T) {
	_, full, _ := benchSession(t)
	long := *full
	long.injectName = "m__read"
	long.injectMarkers = strings.Repeat("x", 70000) // cut to 65535 bytes
	long.last = [2]string{"", "crm__find"}
	for name, st := range map[string]*DetectState{"empty": {}, "session": full, "long strings": &long} {
		blob := st.Marshal()
		if len(blob) != cap(blob) || len(blob) != st.marshalSize() {
			t.Errorf("%s: Marshal() len %d, cap %d, marshalSize %d; want all equal", name, len(blob), cap(blob), st.marshalSize())
		}
		prefix := []byte("prefix")
		if got := st.AppendMarshal(prefix); !bytes.Equal(got, append(prefix, blob...)) {
			t.Errorf("%s: AppendMarshal(%q) differs from the prefix and Marshal()", name, prefix)
		}
		back, err := UnmarshalDetectState(blob)
		if err != nil {
			t.Fatalf("%s: UnmarshalDetectState(Marshal()) error: %v", name, err)
		}
		if again := back.Marshal(); !bytes.Equal(again, blob) {
			t.Errorf("%s: UnmarshalDetectState(Marshal()).Marshal() differs from Marshal()", name)
		}
		if back.last != st.last || back.injectName != st.injectName || back.untrustedName != st.untrustedName {
			t.Errorf("%s: decoded names = %q, %q, %q; want %q, %q, %q", name,
				back.last, back.injectName, back.untrustedName, st.last, st.injectName, st.untrustedName)
		}
		for i, src := range back.taint.sources {
			if src.name != st.taint.sources[i].name {
				t.Errorf("%s: decoded source %d name = %q; want %q", name, i, src.name, st.taint.sources[i].name)
			}
		}
	}
}

// TestDetectStateDecodeAllocs checks that decoding allocates per list, not
// per name: a session's taint sources repeat a few tool names.
func TestDetectStateDecodeAllocs(t *testing.T) {
	_, st, _ := benchSession(t)
	if len(st.taint.sources) < 16 {
		t.Fatalf("benchSession holds %d taint sources; want at least 16", len(st.taint.sources))
	}
	blob := st.Marshal()
	allocs := testing.AllocsPerRun(10, func() {
		if _, err := UnmarshalDetectState(blob); err != nil {
			t.Fatal(err)
		}
	})
	// The state, its four lists and one copy of each distinct name.
	if allocs > 12 {
		t.Errorf("UnmarshalDetectState: %v allocations; want at most 12", allocs)
	}
}
