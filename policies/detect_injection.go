package policies

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
)

// This file scores tool results for instructions addressed to the model:
// the generic prompt-injection markers of the published literature and of
// open-source guards (override phrases, text addressed to an AI, role and
// chat-template markers, hidden tags, urgency and authority framing,
// imperative requests with a recipient). No single marker is the whole
// detector: each has a weight and a result is a hit when the weights of the
// markers it carries add up to the threshold.

// FlagPromptInjection is raised after a result scored as carrying
// instructions addressed to the model; LabelPromptInjection is the result
// tag of such a result and the taint category of its values.
const (
	FlagPromptInjection  = "prompt_injection"
	LabelPromptInjection = "prompt_injection"
)

// InjectionDetector scores results of tools for instructions addressed to
// the model.
//
//	injection:
//	  labels: [untrusted_content]   # tools whose results are scored; ["*"]: every tool
//	  threshold: 1.0                # sum of marker weights that makes a hit
//	  weights: {urgency: 0.2, tool_directive: 0}   # per marker; 0 turns it off
//	  act: [external_send, payment] # labels of calls that get the flag after a hit
type InjectionDetector struct {
	Disabled bool `yaml:"disabled"`
	// Labels: results of tools with any of these labels are scored
	// (default: labels.untrusted). "*" scores every tool's results.
	Labels []string `yaml:"labels"`
	// Threshold is the sum of marker weights at which a result carries
	// instructions (default 1.0; between 0.1 and 10).
	Threshold float64 `yaml:"threshold"`
	// Weights override InjectionMarkerWeights per marker name; 0 turns a
	// marker off.
	Weights map[string]float64 `yaml:"weights"`
	// Act are the labels of calls that get the prompt_injection flag once
	// a result of the session carried instructions (default:
	// labels.send, labels.escalation, payment, account_change, membership,
	// write). The first call after each new hit gets it too.
	Act []string `yaml:"act"`
}

// injectionMarker is one kind of evidence. A marker is looked for only
// around its anchors (literal substrings of the normalised text), and
// confirmed by its pattern on a window around each anchor, so the cost is
// a few substring searches per marker on ordinary text.
type injectionMarker struct {
	name    string
	weight  float64
	anchors []string
	// before and after are how many bytes around an anchor the pattern
	// sees; re must match inside that window. A nil re means the anchor
	// alone is the evidence.
	before, after int
	re            *regexp.Regexp
	// word requires the anchor to stand as a whole word.
	word bool
	// check, when set, confirms the anchor at norm[i:j] instead of re.
	check func(norm string, i, j int) bool
}

// maxAnchorHits bounds how many anchor occurrences of one marker are
// checked, so a result that repeats a common word stays cheap.
const maxAnchorHits = 16

// injectionMarkers are the markers, strongest first. Their names are what
// weights configure and flag details show.
var injectionMarkers = []injectionMarker{
	{
		// "Ignore all previous instructions" and its relatives: the classic
		// override (Perez & Ribeiro 2022; every open-source guard).
		name: "ignore_previous", weight: 1.0,
		anchors: []string{"ignore", "disregard", "forget", "override", "overrule", "skip", "abandon"},
		before:  0, after: 90,
		re: regexp.MustCompile(`^(?:ignore|disregard|forget|override|overrule|skip|abandon)\s+(?:about\s+)?(?:(?:all|any|of|the|your|my|these|those|every|everything|previously|prior)\s+)*(?:previous|prior|above|earlier|preceding|original|former|initial|old|system|given|current|existing|other)\s+(?:instructions?|prompts?|directions?|directives?|rules|guidelines|guidance|context|commands?)`),
	},
	{
		// Chat-template and role tokens never occur in ordinary content.
		name: "chat_template", weight: 1.0,
		anchors: []string{"<|im_start|>", "<|im_end|>", "<|system|>", "<|user|>", "<|assistant|>", "<|endoftext|>", "<|begin_of_text|>", "<|start_header_id|>", "[inst]", "[/inst]", "<<sys>>", "<</sys>>", "<start_of_turn>"},
	},
	{
		// Hiding the act from the person the agent works for.
		name: "hide_from_user", weight: 0.8,
		anchors: []string{"user"}, word: true,
		before: 60, after: 0,
		re: regexp.MustCompile(`(?:do not|don't|dont|never|without|must not|should not|no need to)\s+(?:ever\s+)?(?:tell|telling|inform|informing|notify|notifying|mention|mentioning|reveal|revealing|alert|alerting|let|letting|ask|asking|confirm|confirming|show|showing|warn|warning)\s+(?:it\s+to\s+|this\s+to\s+|anything\s+to\s+|with\s+|about\s+this\s+)?(?:the|your|my)\s+(?:human\s+)?user$`),
	},
	{
		// "Before you can solve the task that I gave you": the injection
		// inserts itself ahead of the user's task.
		name: "before_task", weight: 0.7,
		anchors: []string{"before"}, word: true,
		before: 0, after: 110,
		re: regexp.MustCompile(`^before\s+(?:you\s+)?(?:can\s+|could\s+|may\s+|start\s+|begin\s+|go\s+on\s+|continue\s+|proceed\s+)?(?:to\s+)?(?:solve|solving|complete|completing|do|doing|start|starting|answer|answering|continue|continuing|proceed|proceeding|finish|finishing|work on|working on|handle|handling|respond|responding|address|addressing|perform|performing|carry out|carrying out|execute|executing)\s+(?:with\s+|to\s+|on\s+)?(?:the|your|my|this|that|any|their)\s+(?:\w+\s+){0,2}(?:task|request|question|instructions?|job|query|assignment|goal)`),
	},
	{
		// A new task or goal that replaces the user's.
		name: "task_override", weight: 0.6,
		anchors: []string{"instruction", "task", "goal", "objective", "instead"},
		before:  50, after: 50,
		re: regexp.MustCompile(`(?:(?:new|updated|real|actual|true|revised|secret|hidden|only|primary|urgent)\s+(?:instructions?|task|goal|objective|orders|mission)\b|(?:your|the)\s+(?:new|real|actual|true|only|primary)\s+(?:instructions?|task|goal|objective|job)\b|instead\s+of\s+(?:the|your|doing|solving)\s+(?:\w+\s+)?(?:task|request|instructions?)|(?:do not|don't)\s+(?:solve|complete|do|answer)\s+the\s+(?:\w+\s+)?(?:task|request))`),
	},
	{
		// Role markers written into content: "system:", "### instruction",
		// "(system message)".
		name: "role_marker", weight: 0.6,
		anchors: []string{"system", "instruction", "admin", "developer"},
		before:  12, after: 24,
		re: regexp.MustCompile(`(?:(?:^|\n|[>"'\[(])\s*(?:system|sys)\s*(?:message|prompt|instruction|override|note|update)?\s*[:\]]|#{2,}\s*\(?\s*(?:system|instructions?|new instructions?|system[ _]message|admin|developer)\b|\(\s*system[ _]message\s*\)|\[\s*(?:system|admin|developer)\s*(?:message|note|override)?\s*\])`),
	},
	{
		// Text addressed to the model: "to you, GPT-4", "Dear AI",
		// "Attention assistant", "if you are an AI".
		name: "addressed_to_model", weight: 0.5,
		anchors: []string{"ai", "a.i.", "assistant", "language model", "gpt", "chatgpt", "claude", "gemini", "llama", "mistral", "llm", "copilot", "chatbot", "bot", "model"}, word: true,
		check: addressedBefore,
	},
	{
		// "After you do that, you can solve the task": hands control back.
		name: "after_that", weight: 0.4,
		anchors: []string{"after", "once", "then", "you can"},
		before:  0, after: 80,
		re: regexp.MustCompile(`^(?:after\s+(?:you\s+)?(?:do|did|have done|'ve done|complete|completed|finish|finished|are done with|'re done with)\s+(?:that|this|it|so|these|the above)|once\s+(?:you(?:'ve| have)?\s+)?(?:done|completed|finished|do|did)\s+(?:that|this|it|so)|(?:then|you can)\s+(?:then\s+)?(?:go back to|return to|resume|continue with|proceed with|solve|complete)\s+(?:the|your)\s+(?:\w+\s+)?(?:task|request|instructions?))`),
	},
	{
		// Urgency framing: "this is an important message", "IMPORTANT!!!".
		name: "urgency", weight: 0.4,
		anchors: []string{"important", "urgent", "critical", "attention", "!!!"},
		before:  30, after: 40,
		re: regexp.MustCompile(`(?:this is an?\s+(?:very\s+|extremely\s+|really\s+)?(?:important|urgent|critical|priority|mandatory)\s+(?:message|instruction|notice|request|update|note|directive)|(?:important|urgent|critical|attention)\s*!{2,}|important\s+(?:message|instructions?|directive)\s+(?:from|for|to)|!!!)`),
	},
	{
		// Claimed authority: "a message from the user", "I am your
		// developer".
		name: "authority", weight: 0.4,
		anchors: []string{"message from", "instructions from", "note from", "i am", "i'm", "this is", "on behalf of"},
		before:  0, after: 50,
		re: regexp.MustCompile(`^(?:(?:message|instructions?|note)\s+from\s+(?:me\b|the\s+(?:user|owner|developer|administrator|admin|system|operator|creator)|your\s+(?:user|owner|developer|administrator|admin|operator|creator|boss|manager|principal))|(?:i am|i'm|this is)\s+(?:the|your)\s+(?:user|owner|developer|administrator|admin|operator|creator|principal)\b|on behalf of\s+(?:the|your)\s+user)`),
	},
	{
		// Instruction-like tags and comments that hide text from a human
		// reader.
		name: "hidden_tag", weight: 0.4,
		anchors: []string{"<information>", "<instruction>", "<instructions>", "<system>", "<important>", "<admin>", "<secret>", "<hidden>", "<prompt>", "<!--"},
		before:  0, after: 200,
		re: regexp.MustCompile(`^(?:<(?:information|instructions?|system|important|admin|secret|hidden|prompt)>|<!--[^>]*?\b(?:you|please|must|ignore|assistant|ai|model|send|instructions?)\b)`),
	},
	{
		// An imperative to move something to a recipient: a verb that
		// sends, pays, shares or deletes, at the start of a sentence or
		// clause, then an address, account or web address on the same
		// line. Ordinary mail does this too, so it never decides alone.
		name: "imperative_action", weight: 0.4,
		anchors: []string{"send", "transfer", "forward", "email", "e-mail", "wire", "pay", "share", "post", "upload", "invite", "delete", "visit", "concatenate"}, word: true,
		check: imperativeWithRecipient,
	},
	{
		// A named tool or function call spelled out for the model.
		name: "tool_directive", weight: 0.3,
		anchors: []string{"tool", "function"}, word: true,
		before: 50, after: 0,
		re: regexp.MustCompile(`(?:call|use|invoke|run|execute|calling|using|invoking)\s+(?:the\s+)?` + "`?" + `[a-z][\w.-]*_[\w.-]+` + "`?" + `\s+(?:tool|function)$`),
	},
}

// InjectionMarkerWeights are the default weights of the markers, by name.
var InjectionMarkerWeights = func() map[string]float64 {
	m := make(map[string]float64, len(injectionMarkers))
	for _, mk := range injectionMarkers {
		m[mk.name] = mk.weight
	}
	return m
}()

// InjectionScore is how strongly a text carries instructions addressed to
// the model.
type InjectionScore struct {
	Score   float64  // sum of the weights of the markers found
	Markers []string // names of the markers found, strongest first
	Hit     bool     // Score reached the threshold
}

// injectionScorer is the compiled configuration of the detector.
type injectionScorer struct {
	weights   []float64 // per injectionMarkers entry
	threshold float64
	all       bool // every tool's results are scored
	labels    []string
	act       []string
}

func (c InjectionDetector) validate(bad func(string, ...any)) {
	if t := c.Threshold; t != 0 && (t < 0.1 || t > 10) {
		bad("injection.threshold: %v is out of range: use a sum of marker weights between 0.1 and 10, such as 1.0", t)
	}
	for name, w := range c.Weights {
		if _, ok := InjectionMarkerWeights[name]; !ok {
			bad("injection.weights: unknown marker %q: use one of %s", name, strings.Join(injectionMarkerNames(), ", "))
		}
		if w < 0 || w > 10 || w != w {
			bad("injection.weights.%s: %v is out of range: use a weight between 0 (off) and 10", name, w)
		}
	}
	for i, l := range c.Labels {
		if l == "" {
			bad("injection.labels[%d]: empty label: name a tool label, or \"*\" for every tool", i)
		}
	}
}

func injectionMarkerNames() []string {
	out := make([]string, len(injectionMarkers))
	for i, m := range injectionMarkers {
		out[i] = m.name
	}
	return out
}

func newInjectionScorer(c DetectorConfig) injectionScorer {
	s := injectionScorer{threshold: c.Injection.Threshold, labels: c.Injection.Labels, act: c.Injection.Act}
	if s.threshold == 0 {
		s.threshold = 1.0
	}
	if len(s.labels) == 0 {
		s.labels = c.Labels.Untrusted
	}
	s.all = slices.Contains(s.labels, "*")
	if len(s.act) == 0 {
		s.act = slices.Concat(c.Labels.Send, c.Labels.Escalation, []string{"payment", "account_change", "membership", "write"})
	}
	s.weights = make([]float64, len(injectionMarkers))
	for i, m := range injectionMarkers {
		s.weights[i] = m.weight
		if w, ok := c.Injection.Weights[m.name]; ok {
			s.weights[i] = w
		}
	}
	return s
}

// scores reports whether results of a tool with these labels are scored.
func (s *injectionScorer) scores(labels []string) bool {
	return s.all || hasAny(labels, s.labels)
}

// score scores text. The text is normalised once and scanned once for the
// anchors of every marker (anchorScan); only markers whose anchors occur
// are confirmed, each on windows around its own occurrences.
func (s *injectionScorer) score(text string) InjectionScore {
	sc := scoreScratch.Get().(*scoreBufs)
	defer scoreScratch.Put(sc)
	sc.norm = appendNormInjection(sc.norm[:0], text)
	var out InjectionScore
	if len(sc.norm) == 0 {
		return out
	}
	norm := string(sc.norm)
	anchors.scanInto(norm, &sc.hits)
	hits := sc.hits
	for i := range injectionMarkers {
		m := &injectionMarkers[i]
		w := s.weights[i]
		if w <= 0 || !m.confirm(norm, hits, anchors.refs[i]) {
			continue
		}
		out.Score += w
		out.Markers = append(out.Markers, m.name)
	}
	out.Hit = out.Score >= s.threshold-1e-9
	return out
}

// scoreBufs is the working memory of one score, kept for the next: the
// normalised text and the anchor hits, about two and a half times the
// result's size.
type scoreBufs struct {
	norm []byte
	hits anchorHits
}

var scoreScratch = sync.Pool{New: func() any { return new(scoreBufs) }}

// anchorTable finds the anchors of every marker in one pass over the
// normalised text: a bitmap of the anchors' first two bytes rejects most
// positions with one lookup, and the anchors starting with the byte at a
// surviving position are compared there.
type anchorTable struct {
	pairs [1 << 16 / 64]uint64 // bit b0<<8|b1 set: some anchor starts with b0 b1
	first [256][]int32         // anchor ref ids by first byte
	ref   []anchorRef          // by id
	refs  [][]int32            // per marker, its ref ids in anchor order
}

// anchorRef is one anchor of one marker.
type anchorRef struct {
	s    string
	word bool
}

var anchors = newAnchorTable()

func newAnchorTable() *anchorTable {
	t := &anchorTable{refs: make([][]int32, len(injectionMarkers))}
	for i, m := range injectionMarkers {
		for _, a := range m.anchors {
			if len(a) < 2 {
				panic("injection marker " + m.name + ": anchor " + a + " is shorter than 2 bytes")
			}
			id := int32(len(t.ref))
			t.ref = append(t.ref, anchorRef{s: a, word: m.word})
			t.refs[i] = append(t.refs[i], id)
			p := uint16(a[0])<<8 | uint16(a[1])
			t.pairs[p/64] |= 1 << (p % 64)
			t.first[a[0]] = append(t.first[a[0]], id)
		}
	}
	return t
}

// anchorHits are the occurrences of each anchor ref found by one scan:
// at most maxAnchorHits per ref, since a marker never checks more.
type anchorHits struct {
	n   []uint8 // per ref
	pos []int32 // per ref, maxAnchorHits slots
	buf []int32 // pos, then scan's own per-ref positions
}

// scan finds, for every anchor ref, its first maxAnchorHits occurrences
// that do not overlap an earlier occurrence of the same anchor and, for
// whole-word anchors, stand as a word: the occurrences a search with
// strings.Index from the end of the previous one would give.
func (t *anchorTable) scan(norm string) anchorHits {
	var h anchorHits
	t.scanInto(norm, &h)
	return h
}

// scanInto is scan into h, reusing its memory.
func (t *anchorTable) scanInto(norm string, h *anchorHits) {
	n := len(t.ref)
	if cap(h.n) < n {
		h.n = make([]uint8, n)
		h.buf = make([]int32, n*(maxAnchorHits+1))
	}
	h.n = h.n[:n]
	clear(h.n)
	h.pos = h.buf[:n*maxAnchorHits]
	next := h.buf[n*maxAnchorHits : n*(maxAnchorHits+1)] // per ref, the first position a new occurrence may start at
	clear(next)
	for i := 0; i+1 < len(norm); i++ {
		p := uint16(norm[i])<<8 | uint16(norm[i+1])
		if t.pairs[p/64]&(1<<(p%64)) == 0 {
			continue
		}
		for _, id := range t.first[norm[i]] {
			r := &t.ref[id]
			if int32(i) < next[id] || h.n[id] >= maxAnchorHits || !strings.HasPrefix(norm[i:], r.s) {
				continue
			}
			next[id] = int32(i + len(r.s))
			if r.word && !wordAt(norm, i, i+len(r.s)) {
				continue
			}
			h.pos[int(id)*maxAnchorHits+int(h.n[id])] = int32(i)
			h.n[id]++
		}
	}
}

// confirm reports whether the marker occurs in norm, given the
// occurrences of its anchors: anchors in order, each occurrence in order,
// at most maxAnchorHits of them checked in all.
func (m *injectionMarker) confirm(norm string, h anchorHits, refs []int32) bool {
	checked := 0
	for k, id := range refs {
		a := m.anchors[k]
		for _, j := range h.pos[int(id)*maxAnchorHits : int(id)*maxAnchorHits+int(h.n[id])] {
			if checked >= maxAnchorHits {
				return false
			}
			checked++
			if m.at(norm, int(j), int(j)+len(a)) {
				return true
			}
		}
	}
	return false
}

// at reports whether the anchor occurrence norm[j:k] confirms the marker.
func (m *injectionMarker) at(norm string, j, k int) bool {
	if m.check != nil {
		return m.check(norm, j, k)
	}
	if m.re == nil {
		return true
	}
	lo, hi := max(0, j-m.before), min(len(norm), k+m.after)
	if m.before == 0 {
		lo = j
	}
	if m.after == 0 {
		hi = k
	}
	return m.re.MatchString(norm[lo:hi])
}

// found reports whether the marker occurs in norm, searching each anchor
// separately. It is the reference the one-pass scan is tested against.
func (m *injectionMarker) found(norm string) bool {
	hits := 0
	for _, a := range m.anchors {
		from := 0
		for hits < maxAnchorHits {
			j := strings.Index(norm[from:], a)
			if j < 0 {
				break
			}
			j += from
			from = j + len(a)
			if m.word && !wordAt(norm, j, j+len(a)) {
				continue
			}
			hits++
			if m.at(norm, j, j+len(a)) {
				return true
			}
		}
	}
	return false
}

// wordAt reports whether norm[i:j] is not part of a longer word.
func wordAt(norm string, i, j int) bool {
	isWord := func(b byte) bool { return b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '_' }
	return (i == 0 || !isWord(norm[i-1])) && (j >= len(norm) || !isWord(norm[j]))
}

// normInjection lower-cases ASCII letters, turns escaped line breaks and
// tabs ("\n" written as two characters, as JSON and YAML dumps of results
// carry them) into real ones, drops other backslashes (YAML folds long
// strings with "\" line continuations), and collapses runs of spaces and
// tabs, so that a phrase split over a folded line still reads as one.
func normInjection(text string) string {
	return string(appendNormInjection(make([]byte, 0, len(text)), text))
}

// appendNormInjection appends normInjection(text) to b.
func appendNormInjection(b []byte, text string) []byte {
	b = slices.Grow(b, len(text))
	base := len(b)
	space := true // drop leading space
	for i := 0; i < len(text); i++ {
		c := text[i]
		if c == '\\' && i+1 < len(text) {
			switch text[i+1] {
			case 'n', 'r':
				c = '\n'
				i++
			case 't':
				c = ' '
				i++
			case '\n':
				// A YAML line continuation: the line break is not text.
				c = ' '
				i++
			default:
				continue
			}
		}
		switch {
		case c >= 'A' && c <= 'Z':
			c += 'a' - 'A'
		case c == '\t' || c == '\r':
			c = ' '
		}
		if c == ' ' || c == '\n' {
			if space {
				if c == '\n' && len(b) > base && b[len(b)-1] == ' ' {
					b[len(b)-1] = '\n'
				}
				continue
			}
			space = true
			b = append(b, c)
			continue
		}
		space = false
		b = append(b, c)
	}
	return b
}

// ScoreInjection scores text as the injection detector scores a result of
// a tool it watches, with this profile's weights and threshold (whether
// or not the detector is on).
func (d *Detectors) ScoreInjection(text string) InjectionScore {
	if len(text) > d.cfg.Limits.ResultBytes {
		text = text[:d.cfg.Limits.ResultBytes]
	}
	return d.inj.score(text)
}

// injection raises the prompt_injection flag after a result carried
// instructions: on the first call after each new hit, and on every call
// labelled with one of the act labels.
func (d *Detectors) injection(flags []Flag, st *DetectState, in *Input, seq uint32) []Flag {
	if st.injectLast == 0 {
		return flags
	}
	act := hasAny(in.Call.Labels, d.inj.act)
	if !act && st.injectLast <= st.injectReported {
		return flags
	}
	what := ""
	if act {
		var which []string
		for _, l := range in.Call.Labels {
			if slices.Contains(d.inj.act, l) {
				which = append(which, l)
			}
		}
		what = " (" + strings.Join(which, ", ") + ")"
	}
	more := ""
	if st.injectHits > 1 {
		more = fmt.Sprintf("; %d results with instructions so far, the first at call #%d", st.injectHits, st.injectFirst)
	}
	return append(flags, d.flag(FlagPromptInjection, "call #%d %s%s after the result of call #%d %s carried instructions addressed to the model (%s)%s",
		seq, in.Call.Name, what, st.injectLast, st.injectName, st.injectMarkers, more))
}

// addressTo are the words that, right before a model's name, address it.
var addressTo = []string{"to you", "hey you", "dear", "hey", "hi", "hello", "attention", "note to", "message to",
	"message for", "instructions for", "instruction for", "you are", "you're", "if you are", "as an", "as a", "calling all"}

// addressedBefore reports whether the model's name at norm[i:j] is
// addressed: "to you, GPT-4", "Dear AI", "you are an AI assistant".
func addressedBefore(norm string, i, _ int) bool {
	s := strings.TrimRight(norm[max(0, i-40):i], " ")
	for _, q := range []string{"large", "helpful", "virtual", "ai", "the", "my", "an", "a"} {
		// Qualifiers and articles between the address and the name.
		if strings.HasSuffix(s, q) && wordAt(s, len(s)-len(q), len(s)) {
			s = strings.TrimRight(s[:len(s)-len(q)], " ")
		}
	}
	s = strings.TrimRight(s, " ,:!-")
	for _, a := range addressTo {
		if strings.HasSuffix(s, a) && wordAt(s, len(s)-len(a), len(s)) {
			return true
		}
	}
	return false
}

// imperativeWithRecipient reports whether the verb at norm[i:j] starts a
// sentence, a clause or a request ("please", "you must", "now", "first")
// and the rest of its line (up to 160 bytes) names a recipient: an e-mail
// address, a web address or an IBAN-like account.
func imperativeWithRecipient(norm string, i, j int) bool {
	before := strings.TrimRight(norm[max(0, i-20):i], " ")
	lead := before == "" || strings.ContainsAny(before[len(before)-1:], ".!:;,\n\"'>")
	for _, w := range []string{"please", "must", "should", "need to", "have to", "now", "first", "immediately", "then"} {
		lead = lead || strings.HasSuffix(before, w) && wordAt(before, len(before)-len(w), len(before))
	}
	if !lead {
		return false
	}
	rest := norm[j:min(len(norm), j+160)]
	if k := strings.IndexByte(rest, '\n'); k >= 0 {
		rest = rest[:k]
	}
	if strings.Contains(rest, "http://") || strings.Contains(rest, "https://") || strings.Contains(rest, "www.") {
		return true
	}
	if !strings.ContainsAny(rest, "@.0123456789") {
		return false // no address, host or account number can be there
	}
	// The tokens of rest split at spaces and quoting punctuation, without
	// allocating: this runs for every imperative verb of a long text.
	isSep := func(c byte) bool {
		switch c {
		case ' ', '"', '\'', '(', ')', '<', '>', ',', ';', '`':
			return true
		}
		return false
	}
	for k := 0; k < len(rest); {
		for k < len(rest) && isSep(rest[k]) {
			k++
		}
		start := k
		for k < len(rest) && !isSep(rest[k]) {
			k++
		}
		end := k // trailing sentence punctuation is not part of an address
		for end > start && strings.IndexByte(".!?:", rest[end-1]) >= 0 {
			end--
		}
		if start < end && recipientLike(rest[start:end]) {
			return true
		}
	}
	return false
}

// recipientLike reports whether a lower-case token looks like an e-mail
// address, an IBAN-like account number or a host name. It is a cheaper
// cousin of entities(), good enough for one piece of evidence.
func recipientLike(tok string) bool {
	if at := strings.IndexByte(tok, '@'); at > 0 && strings.IndexByte(tok[at:], '.') > 1 {
		return true
	}
	if len(tok) >= 14 && len(tok) <= 34 && isLower(tok[0]) && isLower(tok[1]) && isDigit(tok[2]) && isDigit(tok[3]) {
		alnum := true
		for k := 4; k < len(tok); k++ {
			alnum = alnum && (isLower(tok[k]) || isDigit(tok[k]))
		}
		if alnum {
			return true
		}
	}
	if dot := strings.LastIndexByte(tok, '.'); dot > 0 {
		return genericTLDs[tok[dot+1:]]
	}
	return false
}

func isLower(b byte) bool { return b >= 'a' && b <= 'z' }
func isDigit(b byte) bool { return b >= '0' && b <= '9' }
