package sessions

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// decodeHistory fills s.History from its stored entries (see encodeEntry), oldest first.
//
// It scans the entries by hand rather than with encoding/json: the entries are written by
// encodeEntry only, and reflection-based decoding was half the CPU of a Redis Snapshot.
func decodeHistory(s *Session, entries []string) error {
	recs, err := appendHistory(nil, entries, s, len(entries))
	if err != nil {
		return err
	}
	if len(recs) > 0 {
		s.History = recs
	}
	return nil
}

// appendHistory returns a new slice holding the records of prev followed by those decoded
// from entries, the newest entries of session s (the last one is call s.Calls+s.Denied), of
// which it keeps the last limit. prev is not modified.
func appendHistory(prev []CallRecord, entries []string, s *Session, limit int) ([]CallRecord, error) {
	if len(entries) == 0 && len(prev) <= limit {
		return prev, nil
	}
	keep := min(len(prev), max(limit-len(entries), 0))
	recs := make([]CallRecord, keep, keep+len(entries))
	copy(recs, prev[len(prev)-keep:])
	last := s.Calls + s.Denied
	created := s.Created.UnixMilli()
	var memo entryMemo
	if keep > 0 {
		memo.prev = &recs[keep-1]
		memo.rawLabels, memo.rawRules = "\x00", "\x00" // unknown: decode, do not share
	}
	for i, e := range entries {
		rec, err := decodeEntry(e, created, &memo)
		if err != nil {
			return nil, fmt.Errorf("history entry %d %q: %w", i, e, err)
		}
		rec.Seq = last - int64(len(entries)-1-i)
		recs = append(recs, rec)
		memo.prev = &recs[len(recs)-1]
	}
	if over := len(recs) - limit; over > 0 {
		recs = recs[over:]
	}
	return recs, nil
}

// entryMemo is what decodeEntry remembers of the entry decoded just
// before: a session mostly repeats the same few tools, so the name, labels
// and rules of an entry are shared with the previous one when equal
// instead of being allocated again. Shared slices are never modified in
// place; result tags, which read adds to, are never shared.
type entryMemo struct {
	prev                *CallRecord
	rawLabels, rawRules string
}

// decodeEntry decodes one history entry; memo may be nil.
func decodeEntry(e string, created int64, memo *entryMemo) (CallRecord, error) {
	if memo == nil {
		memo = &entryMemo{}
	}
	prev := memo.prev
	var rec CallRecord
	if len(e) < 2 || e[0] != '[' || e[len(e)-1] != ']' {
		return rec, fmt.Errorf("not a JSON array")
	}
	var buf [9]string
	items, err := splitArrayInto(buf[:0], e)
	if err != nil {
		return rec, err
	}
	if len(items) == 0 {
		return rec, fmt.Errorf("no time")
	}
	off, err := strconv.ParseInt(items[0], 10, 64)
	if err != nil {
		return rec, fmt.Errorf("time: %w", err)
	}
	rec.Time = time.UnixMilli(created + off)
	var name, rawLabels, rawRules string
	// The memo describes prev until this entry is decoded; then this one.
	defer func() { memo.rawLabels, memo.rawRules = rawLabels, rawRules }()
	strs := []*string{&rec.Server, &rec.Tool, &rec.Decision}
	for k, item := range items[1:] {
		if item == "0" {
			continue // an empty item
		}
		switch k + 1 {
		case 1, 2, 3:
			err = decodeString(item, strs[k])
		case 4:
			rec.Args = json.RawMessage(item)
		case 5:
			err = decodeString(item, &name)
		case 6:
			rawLabels = item
			if prev != nil && memo.rawLabels == item {
				rec.Labels = prev.Labels
				continue
			}
			rec.Labels, err = decodeStrings(item)
		case 7:
			rawRules = item
			if prev != nil && memo.rawRules == item {
				rec.Rules = prev.Rules
				continue
			}
			rec.Rules, err = decodeStrings(item)
		case 8:
			rec.ResultTags, err = decodeStrings(item)
		}
		if err != nil {
			return rec, fmt.Errorf("item %d: %w", k+1, err)
		}
	}
	if name == "" {
		// The name is server + "__" + tool: share the previous entry's if it is that one.
		if prev != nil && prev.Server == rec.Server && prev.Tool == rec.Tool && isDefaultName(prev.Name, rec.Server, rec.Tool) {
			name = prev.Name
		} else {
			name = rec.Server + "__" + rec.Tool
		}
	}
	rec.Name = name
	return rec, nil
}

// isDefaultName reports whether name is server + "__" + tool, without building that string.
func isDefaultName(name, server, tool string) bool {
	return len(name) == len(server)+2+len(tool) && strings.HasPrefix(name, server) &&
		name[len(server):len(server)+2] == "__" && strings.HasSuffix(name, tool)
}

// splitArray returns the raw items of a compact JSON array.
func splitArray(a string) ([]string, error) {
	return splitArrayInto(make([]string, 0, 9), a)
}

// splitArrayInto is splitArray appending to items.
func splitArrayInto(items []string, a string) ([]string, error) {
	inner := a[1 : len(a)-1]
	if inner == "" {
		return items, nil
	}
	for len(inner) > 0 {
		n, err := valueLen(inner)
		if err != nil {
			return nil, err
		}
		items = append(items, inner[:n])
		inner = inner[n:]
		if len(inner) > 0 {
			if inner[0] != ',' {
				return nil, fmt.Errorf("want ',' at %q", inner)
			}
			inner = inner[1:]
		}
	}
	return items, nil
}

// valueLen returns the length of the compact JSON value at the start of s.
func valueLen(s string) (int, error) {
	depth, inString := 0, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inString:
			if c == '\\' {
				i++
			} else if c == '"' {
				inString = false
				if depth == 0 {
					return i + 1, nil
				}
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
		case c == '}' || c == ']':
			depth--
			if depth < 0 {
				return 0, fmt.Errorf("unbalanced %q", s)
			}
			if depth == 0 {
				return i + 1, nil
			}
		case c == ',' && depth == 0:
			return i, nil
		}
	}
	if depth != 0 || inString {
		return 0, fmt.Errorf("unterminated %q", s)
	}
	return len(s), nil
}

func decodeString(item string, dst *string) error {
	if len(item) >= 2 && item[0] == '"' && item[len(item)-1] == '"' && !strings.ContainsRune(item, '\\') {
		*dst = item[1 : len(item)-1]
		return nil
	}
	return json.Unmarshal([]byte(item), dst)
}

func decodeStrings(item string) ([]string, error) {
	if len(item) < 2 || item[0] != '[' {
		return nil, fmt.Errorf("want a list, got %q", item)
	}
	raw, err := splitArray(item)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(raw))
	for i, r := range raw {
		if err := decodeString(r, &out[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}
