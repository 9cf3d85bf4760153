package policies

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"unicode"
)

var wordTexts = []string{
	"", "Dear team, the QUARTERLY figures are attached.", "Straße İstanbul ÀÉÎ ΣΊΣΥΦΟΣ naïve 123abc DEF-456",
	"ǅemal ﬁle Ⅻ ＡＢＣ", "bad \xff bytes\xe4\xb8 in \ufffd text", "tab\tnew\nline__under_score",
}

// refWords is words as the strings it stands for: lower-cased runs of
// letters and digits.
func refWords(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) })
}

// TestWordsHash checks that each word's hash and length are those of the
// lower-cased word, found where a plain split finds it.
func TestWordsHash(t *testing.T) {
	for _, s := range wordTexts {
		ws := words(s, nil)
		want := refWords(s)
		if len(ws) != len(want) {
			t.Fatalf("words(%q) = %d words; want %d (%q)", s, len(ws), len(want), want)
		}
		for i, w := range ws {
			lower := strings.ToLower(want[i])
			if s[w.start:w.end] != want[i] || w.text(s) != lower || w.h != fnv64(lower) || w.n != len(lower) {
				t.Errorf("words(%q)[%d] = %q (hash %x, len %d); want %q (hash %x, len %d)",
					s, i, w.text(s), w.h, w.n, lower, fnv64(lower), len(lower))
			}
		}
		if got := wordsUpTo(s, nil, 2); !slices.Equal(got, ws[:min(2, len(ws))]) {
			t.Errorf("wordsUpTo(%q, 2) = %v; want %v", s, got, ws[:min(2, len(ws))])
		}
	}
}

// refClassify is classify without its shortcuts: every token is
// lower-cased and tried as an address.
func refClassify(tok string, f func(entity)) {
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
	if ip, err := netip.ParseAddr(tok); err == nil && (ip.Is4() || strings.Count(tok, ":") >= 2) {
		f(entity{entIP, ip.Unmap().String()})
		return
	}
	if ap, err := netip.ParseAddrPort(tok); err == nil {
		f(entity{entIP, ap.Addr().Unmap().String()})
		return
	}
	host, _, _ := strings.Cut(lower, "/")
	if isHostName(host, true) {
		f(entity{entHost, host})
		return
	}
	classifyPlain(tok, f)
}

func TestClassifyShortcuts(t *testing.T) {
	toks := []string{
		"10.0.0.1", "10.0.0.1:8080", "FE80::1", "fe80::1%eth0", "::ffff:10.1.2.3", "2001:DB8::7", "Deadbeef:80",
		"1.2.3", "a.b.c.d", "Example.COM/path", "Docs.Example.org", "notes.md", "HTTPS://Host.Example.io/x",
		"Ann@Corp.Example", "mailto:Bob@X.io", "AB12CD34EF56", "12345678", "Thursday", "İstanbul.com", "x:y:z",
		"ΣΊΣΥΦΟΣ.gr", "key:value", "ab12cd34ef", "%eth0",
	}
	for _, tok := range toks {
		var got, want []entity
		classify(tok, func(e entity) { got = append(got, e) })
		refClassify(tok, func(e entity) { want = append(want, e) })
		if !slices.Equal(got, want) {
			t.Errorf("classify(%q) = %v; want %v", tok, got, want)
		}
	}
}

func FuzzClassify(f *testing.F) {
	for _, s := range []string{"10.0.0.1:8080", "FE80::1", "Example.COM/path", "Ann@Corp.Example", "AB12CD34EF56"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		if tok == "" {
			return
		}
		var got, want []entity
		classify(tok, func(e entity) { got = append(got, e) })
		refClassify(tok, func(e entity) { want = append(want, e) })
		if !slices.Equal(got, want) {
			t.Errorf("classify(%q) = %v; want %v", tok, got, want)
		}
	})
}
