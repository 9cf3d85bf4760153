package audit

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// appendEvent appends e as encoding/json would marshal it, byte for byte
// (fields in declaration order, omitempty, HTML-safe escaping), without
// its reflection and allocations: every allowed call writes one event.
// Values encoding/json refuses (a non-finite risk, a time outside years
// 0-9999) go through json.Marshal, so that they fail as they always did.
func appendEvent(b []byte, e *Event) ([]byte, error) {
	if !plainEvent(e) {
		data, err := json.Marshal(e)
		if err != nil {
			return b, fmt.Errorf("encode audit event: %w", err)
		}
		return append(b, data...), nil
	}
	b = append(b, `{"time":"`...)
	b = e.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","kind":`...)
	b = appendString(b, string(e.Kind))
	b = appendField(b, `,"session":`, e.Session)
	b = appendField(b, `,"agent":`, e.Agent)
	b = appendField(b, `,"profile":`, e.Profile)
	b = appendField(b, `,"tool":`, e.Tool)
	if e.Seq != 0 {
		b = strconv.AppendInt(append(b, `,"seq":`...), e.Seq, 10)
	}
	b = appendField(b, `,"decision":`, e.Decision)
	b = appendList(b, `,"rules":`, e.Rules)
	b = appendList(b, `,"flags":`, e.Flags)
	if e.Risk != 0 {
		b = appendFloat(append(b, `,"risk":`...), e.Risk)
	}
	if e.Forwarded {
		b = append(b, `,"forwarded":true`...)
	}
	if e.Approved != nil {
		b = strconv.AppendBool(append(b, `,"approved":`...), *e.Approved)
	}
	b = appendField(b, `,"reason":`, e.Reason)
	b = appendField(b, `,"actor":`, e.Actor)
	b = appendList(b, `,"removed":`, e.Removed)
	if e.Count != 0 {
		b = strconv.AppendInt(append(b, `,"count":`...), int64(e.Count), 10)
	}
	b = appendField(b, `,"policy_version":`, e.PolicyVersion)
	b = appendField(b, `,"error":`, e.Error)
	b = appendField(b, `,"trace_id":`, e.TraceID)
	return append(b, '}'), nil
}

// plainEvent reports whether appendEvent can encode e itself: what
// encoding/json rejects is left to it.
func plainEvent(e *Event) bool {
	if math.IsNaN(e.Risk) || math.IsInf(e.Risk, 0) {
		return false
	}
	if y := e.Time.Year(); y < 0 || y > 9999 {
		return false
	}
	_, off := e.Time.Zone()
	return off > -24*3600 && off < 24*3600
}

func appendField(b []byte, key, v string) []byte {
	if v == "" {
		return b
	}
	return appendString(append(b, key...), v)
}

func appendList(b []byte, key string, vs []string) []byte {
	if len(vs) == 0 {
		return b
	}
	b = append(b, key...)
	for i, v := range vs {
		if i == 0 {
			b = append(b, '[')
		} else {
			b = append(b, ',')
		}
		b = appendString(b, v)
	}
	return append(b, ']')
}

// appendFloat formats f as encoding/json does (ES6 number to string).
func appendFloat(b []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// e-09 is written e-9.
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

const hexDigits = "0123456789abcdef"

// appendString quotes s as encoding/json does with HTML escaping on:
// <, > and & are escaped, as are U+2028 and U+2029, and invalid UTF-8
// becomes U+FFFD.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(append(b, s[start:i]...), `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(append(b, s[start:i]...), '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	return append(append(b, s[start:]...), '"')
}
