package policies

import (
	"encoding/json"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// This file turns text into the values the detectors compare: entities
// (e-mail addresses, hosts, IBAN-like account numbers, IP addresses, long
// numbers and secret-looking tokens), whole values, and fingerprints of
// word runs. Every comparison is on 64-bit FNV-1a hashes of a normalised
// key, so the session state never holds the values themselves.

// Entity kinds. The first four are destinations (see DestinationDetector).
const (
	entEmail = "email"
	entHost  = "host"
	entIBAN  = "iban"
	entIP    = "ip"
	entNum   = "number"
	entToken = "token"
)

// entity is one value found in a text: its kind and normalised value.
type entity struct {
	kind, value string
}

func (e entity) key() string { return e.kind + ":" + e.value }

func (e entity) destination() bool {
	switch e.kind {
	case entEmail, entHost, entIBAN, entIP:
		return true
	}
	return false
}

// ibanRE matches IBAN-like account numbers, written as one run or in
// groups of four (ISO 13616 print format). The country code and check
// digits are required; the check sum is not verified, so test numbers and
// typos still count as account numbers.
var ibanRE = regexp.MustCompile(`\b[A-Z]{2}[0-9]{2}(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,4})?)\b`)

// genericTLDs are the top-level domains accepted for a host written
// without a scheme (besides two-letter country codes not in fileExts), so
// that "report.pdf" is not read as a host.
var genericTLDs = map[string]bool{
	"com": true, "org": true, "net": true, "io": true, "dev": true, "ai": true, "app": true,
	"info": true, "biz": true, "edu": true, "gov": true, "xyz": true, "cloud": true,
	"online": true, "site": true, "tech": true, "shop": true, "live": true, "email": true,
}

// fileExts are two-letter file extensions that are also country codes;
// "notes.md" is a file, not a host.
var fileExts = map[string]bool{
	"md": true, "py": true, "sh": true, "rs": true, "js": true, "ts": true, "cs": true,
	"pl": true, "rb": true, "so": true, "gz": true, "ps": true, "ml": true, "hs": true,
	"am": true, "in": true, "go": true, "mk": true, "tf": true, "ex": true, "cc": true, "hh": true,
}

// isTokenSep reports whether r separates tokens when looking for entities.
func isTokenSep(r rune) bool {
	if r < utf8.RuneSelf {
		return asciiTokenSep[r]
	}
	return unicode.IsSpace(r)
}

// asciiTokenSep is isTokenSep for ASCII, by table: it runs on every rune
// of a result.
var asciiTokenSep = func() (t [utf8.RuneSelf]bool) {
	for r := range rune(utf8.RuneSelf) {
		t[r] = isTokenSepRune(r)
	}
	return t
}()

// isTokenSepRune is isTokenSep without the table.
func isTokenSepRune(r rune) bool {
	if unicode.IsSpace(r) {
		return true
	}
	switch r {
	case '"', '\'', '`', '<', '>', '(', ')', '[', ']', '{', '}', ',', ';', '|', '\\':
		return true
	}
	return false
}

// entities calls f for every entity in s, in order of appearance (IBANs
// after the rest). The same entity may be reported more than once.
func entities(s string, f func(entity)) {
	if mayHoldIBAN(s) {
		for _, m := range ibanRE.FindAllString(s, -1) {
			f(entity{entIBAN, strings.ReplaceAll(m, " ", "")})
		}
	}
	for tok := range strings.FieldsFuncSeq(s, isTokenSep) {
		tok = strings.TrimRight(tok, ".:!?")
		tok = strings.TrimLeft(tok, ":")
		if len(tok) < 4 {
			continue
		}
		classify(tok, f)
	}
}

// mayHoldIBAN is a cheap test that saves the regexp on most text: two
// capital letters followed by two digits.
func mayHoldIBAN(s string) bool {
	for i := 0; i+3 < len(s); i++ {
		if s[i] >= 'A' && s[i] <= 'Z' && s[i+1] >= 'A' && s[i+1] <= 'Z' &&
			s[i+2] >= '0' && s[i+2] <= '9' && s[i+3] >= '0' && s[i+3] <= '9' {
			return true
		}
	}
	return false
}

func classify(tok string, f func(entity)) {
	// Every entity below but numbers and tokens holds "://", "@", "." or
	// ":", none of which lower-casing adds or removes: most words of a
	// text have none, and are not lower-cased (nor parsed as addresses,
	// which costs an error value each).
	if strings.IndexAny(tok, ".:@") < 0 {
		classifyPlain(tok, f)
		return
	}
	lower := strings.ToLower(tok)
	switch {
	case strings.Contains(lower, "://"):
		if h := URLHost(lower); h != "" {
			if ip, err := netip.ParseAddr(strings.Trim(h, "[]")); err == nil {
				f(entity{entIP, ip.Unmap().String()})
			} else {
				f(entity{entHost, h})
			}
		}
		return
	case strings.Contains(lower, "@"):
		addr := strings.TrimPrefix(lower, "mailto:")
		if at := strings.LastIndexByte(addr, '@'); at > 0 && isHostName(addr[at+1:], false) {
			f(entity{entEmail, addr})
		}
		return
	}
	if mayBeAddr(tok) {
		if ip, err := netip.ParseAddr(tok); err == nil && (ip.Is4() || strings.Count(tok, ":") >= 2) {
			f(entity{entIP, ip.Unmap().String()})
			return
		}
		if ap, err := netip.ParseAddrPort(tok); err == nil {
			f(entity{entIP, ap.Addr().Unmap().String()})
			return
		}
	}
	host, _, _ := strings.Cut(lower, "/")
	if isHostName(host, true) {
		f(entity{entHost, host})
		return
	}
	classifyPlain(tok, f)
}

// mayBeAddr reports whether tok may parse as an IP address, or an address
// and port: netip's parsers refuse anything that does not start with a
// hex digit, a colon or a bracket.
func mayBeAddr(tok string) bool {
	c := tok[0]
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' || c == ':' || c == '['
}

// classifyPlain reports tok as a long number or a secret-looking token,
// if it is one.
func classifyPlain(tok string, f func(entity)) {
	digits, letters, other := 0, 0, 0
	for _, r := range tok {
		switch {
		case r >= '0' && r <= '9':
			digits++
		case unicode.IsLetter(r):
			letters++
		case r == '_' || r == '-' || r == '.' || r == '+' || r == '/' || r == '=':
		default:
			other++
		}
	}
	switch {
	case letters == 0 && other == 0 && digits >= 6:
		f(entity{entNum, strings.Map(keepDigits, tok)})
	case other == 0 && letters > 0 && digits > 0 && len(tok) >= 8 && !(mayHoldIBAN(tok) && ibanRE.MatchString(tok)):
		f(entity{entToken, tok})
	}
}

func keepDigits(r rune) rune {
	if r >= '0' && r <= '9' {
		return r
	}
	return -1
}

// isHostName reports whether s looks like a DNS name with at least two
// labels. With strictTLD, the last label must be a generic TLD or a
// two-letter country code that is not a common file extension.
func isHostName(s string, strictTLD bool) bool {
	if len(s) < 4 || len(s) > 253 || !strings.Contains(s, ".") {
		return false
	}
	var tld string
	for l := range strings.SplitSeq(s, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
		tld = l
	}
	for i := 0; i < len(tld); i++ {
		if tld[i] < 'a' || tld[i] > 'z' {
			return false
		}
	}
	if !strictTLD {
		return len(tld) >= 2
	}
	return genericTLDs[tld] || len(tld) == 2 && !fileExts[tld]
}

// Hashing. Keys of different families never collide by construction
// of their prefixes; fnv64 is FNV-1a.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func fnv64(s string) uint64 {
	h := uint64(fnvOffset)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return h
}

func fnv64b(b []byte) uint64 {
	h := uint64(fnvOffset)
	for _, c := range b {
		h ^= uint64(c)
		h *= fnvPrime
	}
	return h
}

// word is one normalised word of a text: a run of letters and digits,
// lower-cased. The detectors compare words only by hash, so a word is its
// hash and length, and where it stands in the text (for flag details).
type word struct {
	h          uint64 // fnv64 of the lower-cased word
	n          int    // length of the lower-cased word
	start, end int    // the word in the text it came from
}

// text is the normalised word w of s.
func (w word) text(s string) string { return strings.ToLower(s[w.start:w.end]) }

// words returns the normalised words of s. Punctuation, quoting and
// spacing do not matter. Each word is lower-cased as strings.ToLower does
// (rune by rune), while it is hashed, without building its string.
func words(s string, buf []word) []word { return wordsUpTo(s, buf, -1) }

// wordsUpTo is words, stopping after max words if max >= 0.
func wordsUpTo(s string, buf []word, max int) []word {
	buf = buf[:0]
	start := -1
	var h uint64
	var n int
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			// ASCII, most of any text: a table says whether the byte
			// is a letter or digit, and gives it lower-cased.
			if lc := asciiWord[c]; lc != 0 {
				if start < 0 {
					start, h, n = i, fnvOffset, 0
				}
				h = (h ^ uint64(lc)) * fnvPrime
				n++
			} else if start >= 0 {
				if buf = append(buf, word{h: h, n: n, start: start, end: i}); len(buf) == max {
					return buf
				}
				start = -1
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if !unicode.IsLetter(r) && !unicode.IsDigit(r) {
			if start >= 0 {
				if buf = append(buf, word{h: h, n: n, start: start, end: i}); len(buf) == max {
					return buf
				}
				start = -1
			}
			i += size
			continue
		}
		if start < 0 {
			start, h, n = i, fnvOffset, 0
		}
		var enc [utf8.UTFMax]byte
		for _, c := range utf8.AppendRune(enc[:0], unicode.ToLower(r)) {
			h = (h ^ uint64(c)) * fnvPrime
			n++
		}
		i += size
	}
	if start >= 0 {
		buf = append(buf, word{h: h, n: n, start: start, end: len(s)})
	}
	return buf
}

// asciiWord maps each ASCII letter and digit to itself lower-cased, and
// every other byte to 0.
var asciiWord = func() (t [utf8.RuneSelf]byte) {
	for c := range byte(utf8.RuneSelf) {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
			t[c] = c
		case c >= 'A' && c <= 'Z':
			t[c] = c + 'a' - 'A'
		}
	}
	return t
}()

// Word-run fingerprints: hashes of every run of shingleWords words. Result
// text keeps one fingerprint per window of winnowWindow consecutive runs
// (the smallest hash, "winnowing"), so any run of at least
// shingleWords+winnowWindow-1 = 7 words copied from a result into an
// argument shares a kept fingerprint; arguments are checked with all their
// runs.
const (
	shingleWords = 4
	winnowWindow = 4
	// minValueLen is the shortest whole value (normalised) remembered for
	// exact matching; shorter values ("yes", "2024") are too common to
	// mean a flow.
	minValueLen = 6
)

const (
	seedShingle = 0x9e3779b97f4a7c15
	seedValue   = 0xc2b2ae3d27d4eb4f
)

// shingles returns the hash of every run of shingleWords words of ws.
func shingles(ws []word, out []uint64) []uint64 {
	out = out[:0]
	for i := 0; i+shingleWords <= len(ws); i++ {
		h := uint64(seedShingle)
		for _, w := range ws[i : i+shingleWords] {
			h = (h ^ w.h) * fnvPrime
		}
		out = append(out, h)
	}
	return out
}

// winnow keeps the smallest hash of each window of winnowWindow
// consecutive hashes (each kept position once). Fewer hashes than a
// window are all kept.
func winnow(hs []uint64, keep func(uint64)) {
	if len(hs) <= winnowWindow {
		for _, h := range hs {
			keep(h)
		}
		return
	}
	last := -1
	for i := 0; i+winnowWindow <= len(hs); i++ {
		min := i
		for j := i + 1; j < i+winnowWindow; j++ {
			if hs[j] <= hs[min] {
				min = j
			}
		}
		if min != last {
			keep(hs[min])
			last = min
		}
	}
}

// valueHash is the fingerprint of a whole value: its normalised words.
// ok is false for values too short to mean anything.
func valueHash(ws []word) (uint64, bool) {
	n := 0
	for _, w := range ws {
		n += w.n
	}
	if n < minValueLen || len(ws) >= shingleWords*4 {
		// Long values are covered by word runs.
		return 0, false
	}
	h := uint64(seedValue)
	for _, w := range ws {
		h = (h ^ w.h) * fnvPrime
	}
	return h, true
}

// resultValues calls f for each whole value of a tool result: the leaf
// strings and numbers of a JSON result, else the value part of each line
// ("key: value", "- item", or the line itself).
func resultValues(text string, f func(string)) {
	trimmed := strings.TrimSpace(text)
	if len(trimmed) > 0 && (trimmed[0] == '{' || trimmed[0] == '[') {
		var v any
		if json.Unmarshal([]byte(trimmed), &v) == nil {
			walkJSON(v, f)
			return
		}
	}
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		line = strings.TrimSpace(strings.TrimPrefix(line, "- "))
		if _, v, ok := strings.Cut(line, ": "); ok {
			line = v
		}
		line = strings.Trim(line, `"'`)
		if line != "" {
			f(line)
		}
	}
}

func walkJSON(v any, f func(string)) {
	switch t := v.(type) {
	case string:
		f(t)
	case float64:
		f(strconv.FormatFloat(t, 'f', -1, 64))
	case []any:
		for _, e := range t {
			walkJSON(e, f)
		}
	case map[string]any:
		for _, e := range t {
			walkJSON(e, f)
		}
	}
}

// leaf is one scalar argument value with its path, e.g. args.to[0].
type leaf struct {
	path, value string
}

// argLeaves returns the string and number leaves of parsed arguments,
// ordered by path so flags read the same every time.
func argLeaves(args map[string]any) []leaf {
	var out []leaf
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch t := v.(type) {
		case string:
			out = append(out, leaf{path, t})
		case int64:
			out = append(out, leaf{path, strconv.FormatInt(t, 10)})
		case uint64:
			out = append(out, leaf{path, strconv.FormatUint(t, 10)})
		case float64:
			out = append(out, leaf{path, strconv.FormatFloat(t, 'f', -1, 64)})
		case []any:
			for i, e := range t {
				walk(path+"["+strconv.Itoa(i)+"]", e)
			}
		case map[string]any:
			keys := make([]string, 0, len(t))
			for k := range t {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			for _, k := range keys {
				walk(path+"."+k, t[k])
			}
		}
	}
	walk("args", args)
	return out
}

// quote shortens a value for a flag's detail.
func quote(s string) string {
	const max = 60
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return strconv.Quote(s)
}
