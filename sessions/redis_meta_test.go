package sessions

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func TestMetaUnpack(t *testing.T) {
	long := strings.Repeat("x", 300)
	tests := []struct {
		packed string
		want   []string // "<nil>" for a missing field
		err    bool
	}{
		{packed: "\x93\xa5agent\xc2\xa0", want: []string{"agent", "<nil>", ""}},
		{packed: "\x92\xc0\xd9\x03abc", want: []string{"<nil>", "abc"}},
		{packed: "\xdc\x00\x02\xda\x01\x2c" + long + "\xc4\x01z", want: []string{long, "z"}},
		{packed: "\xdd\x00\x00\x00\x01\xdb\x00\x00\x00\x02hi", want: []string{"hi"}},
		{packed: "\x90", want: nil},
		{packed: "", err: true},
		{packed: "\xa3abc", err: true},                                   // not an array
		{packed: "\x92\xa3abc", err: true},                               // one value short
		{packed: "\x91\xa5abc", err: true},                               // string cut short
		{packed: "\x91\xd9", err: true},                                  // length cut short
		{packed: "\x91\x01", err: true},                                  // a number
		{packed: "\x91\xa1a\xa1b", err: true},                            // trailing bytes
		{packed: "\xdc\x00\x14" + strings.Repeat("\xa0", 20), err: true}, // more fields than known
	}
	for _, tt := range tests {
		var f metaValues
		err := f.unpack(tt.packed)
		if tt.err {
			if err == nil {
				t.Errorf("unpack(%q) = nil; want an error", tt.packed)
			}
			continue
		}
		if err != nil {
			t.Errorf("unpack(%q) = %v; want nil", tt.packed, err)
			continue
		}
		var got []string
		for i := range tt.want {
			if f.have[i] {
				got = append(got, f.v[i])
			} else {
				got = append(got, "<nil>")
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("unpack(%q) = %q; want %q", tt.packed, got, tt.want)
		}
		for i := len(tt.want); i < len(metaFields); i++ {
			if f.have[i] {
				t.Errorf("unpack(%q) set field %s", tt.packed, metaFields[i])
			}
		}
	}
}

// parseNames reads plain arrays itself and leaves the rest to encoding/json: both give what
// encoding/json gives.
func TestParseNames(t *testing.T) {
	for _, j := range []string{
		`["a"]`, `["a","b"]`, `[""]`, `["",""]`, `["files__*","x.y"]`, `["a\"b"]`, `["\u00fc"]`, `["ü"]`,
		`["a b"]`, `[ "a" ]`, `["a",]`, `["a""b"]`, `[1]`, `["a",1]`, `[`, `["a`, `{"a":1}`, `"a"`,
	} {
		got, err := parseNames(j)
		var want []string
		wantErr := json.Unmarshal([]byte(j), &want)
		if (err != nil) != (wantErr != nil) || err == nil && fmt.Sprintf("%q", got) != fmt.Sprintf("%q", want) {
			t.Errorf("parseNames(%s) = %q, %v; want %q, %v", j, got, err, want, wantErr)
		}
	}
	for _, j := range []string{"", "[]", "{}", "null"} {
		if got, err := parseNames(j); got != nil || err != nil {
			t.Errorf("parseNames(%q) = %q, %v; want nil, nil", j, got, err)
		}
	}
}
