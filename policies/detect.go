package policies

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// Flag kinds the call-chain detectors raise. Each flag's Detail names the
// calls (by number, 1-based, and tool name) and the values behind it.
const (
	FlagUnseenTool       = "unseen_tool"                // tool never called in the profile's baseline
	FlagUnseenTransition = "unseen_transition"          // this tool never followed the previous one
	FlagRareTransition   = "rare_transition"            // it did, but rarely
	FlagUnseenSequence   = "unseen_sequence"            // the last three tools never ran in this order
	FlagBurst            = "burst"                      // more calls in the window than the profile's norm
	FlagRepeatedCall     = "repeated_call"              // the same tool with the same arguments, again and again
	FlagFanOut           = "fan_out"                    // one tool over many distinct arguments
	FlagDeniedCalls      = "denied_calls"               // denied calls piling up
	FlagOutOfScope       = "out_of_scope"               // an attempt at a tool outside the scope
	FlagEscalation       = "escalation_after_untrusted" // a credential or destructive tool after untrusted content
	FlagNewDestination   = "new_destination"            // a send to a destination neither trusted results nor the baseline have seen
	FlagDataFlow         = "data_flow"                  // arguments carry values from labelled results
	FlagExfiltration     = "exfiltration"               // private data or a credential in a send's arguments
	FlagInjectionChain   = "injection_chain"            // untrusted content in a send's arguments
	// FlagPromptInjection (detect_injection.go): a result carried
	// instructions addressed to the model.
)

// DefaultFlagScores are the scores flags carry unless DetectorConfig.Risk
// overrides them; they are what the risk score combines.
var DefaultFlagScores = map[string]float64{
	FlagUnseenTool:       0.3,
	FlagUnseenTransition: 0.2,
	FlagRareTransition:   0.1,
	FlagUnseenSequence:   0.05,
	FlagBurst:            0.3,
	FlagRepeatedCall:     0.3,
	FlagFanOut:           0.3,
	FlagDeniedCalls:      0.4,
	FlagOutOfScope:       0.5,
	FlagEscalation:       0.5,
	FlagNewDestination:   0.4,
	FlagDataFlow:         0.1,
	FlagExfiltration:     0.6,
	FlagInjectionChain:   0.7,
	FlagPromptInjection:  0.7,
}

// DetectorConfig configures the call-chain detectors of one profile. The
// zero value turns every detector on with the defaults below; the
// sequence detector also needs a baseline.
//
//	labels: {untrusted: [untrusted_content], send: [external_send]}
//	sequence: {rare_below: 0.02, ngram: 3}
//	rate: {window: 1m, max_calls: 30, max_repeats: 5, max_fan_out: 20}
//	probe: {window: 10m, max_denied: 3}
//	destinations: {email_match: address, trusted: ["*@corp.example"]}
//	risk: {half_life: 10m, scores: {new_destination: 0.5}}
//	injection: {labels: [untrusted_content], threshold: 1.0}
type DetectorConfig struct {
	Labels       DetectLabels        `yaml:"labels"`
	Sequence     SequenceDetector    `yaml:"sequence"`
	Rate         RateDetector        `yaml:"rate"`
	Probe        ProbeDetector       `yaml:"probe"`
	Destinations DestinationDetector `yaml:"destinations"`
	DataFlow     DataFlowDetector    `yaml:"data_flow"`
	Injection    InjectionDetector   `yaml:"injection"`
	Risk         RiskConfig          `yaml:"risk"`
	Limits       DetectLimits        `yaml:"limits"`
}

// DetectLabels maps tool labels to what the detectors make of them. Each
// list replaces its default when set.
type DetectLabels struct {
	// Untrusted: results may carry instructions from third parties
	// (default [untrusted_content]).
	Untrusted []string `yaml:"untrusted"`
	// Private: results hold private data (default [private_data]).
	Private []string `yaml:"private"`
	// Credential: results hold secrets (default [credential]).
	Credential []string `yaml:"credential"`
	// Send: the tool sends data out of the organisation (default
	// [external_send]).
	Send []string `yaml:"send"`
	// Escalation: calling the tool after untrusted content is suspicious
	// (default [credential, destructive]).
	Escalation []string `yaml:"escalation"`
}

// SequenceDetector flags tools and transitions the baseline has not seen.
type SequenceDetector struct {
	Disabled bool `yaml:"disabled"`
	// Profile is the baseline profile to compare with; empty means the
	// session's profile.
	Profile string `yaml:"profile"`
	// RareBelow flags a transition seen in less than this share of the
	// calls out of the previous tool (default 0.02; 0 < x < 1).
	RareBelow float64 `yaml:"rare_below"`
	// MinTraces is how many baseline sessions a profile needs before
	// anything is flagged (default 5).
	MinTraces int `yaml:"min_traces"`
	// NGram is 2 (transitions only) or 3 (also 3-tool sequences;
	// default).
	NGram int `yaml:"ngram"`
}

// RateDetector flags bursts, repeated calls and fan-out within a window.
type RateDetector struct {
	Disabled bool          `yaml:"disabled"`
	Window   time.Duration `yaml:"window"`    // default 1m
	MaxCalls int           `yaml:"max_calls"` // calls per window (default 30)
	// MaxRepeats is how many identical calls (tool and arguments) a
	// window may hold (default 5).
	MaxRepeats int `yaml:"max_repeats"`
	// MaxFanOut is how many distinct argument sets one tool may get in a
	// window (default 20).
	MaxFanOut int `yaml:"max_fan_out"`
}

// ProbeDetector flags denied calls piling up, out-of-scope attempts and
// escalation after untrusted content.
type ProbeDetector struct {
	Disabled  bool          `yaml:"disabled"`
	Window    time.Duration `yaml:"window"`     // default 10m
	MaxDenied int           `yaml:"max_denied"` // denied calls in the window before a flag (default 3)
}

// DestinationDetector flags destinations in the arguments of send tools
// that neither the session's trusted results nor the baseline have seen.
type DestinationDetector struct {
	Disabled bool `yaml:"disabled"`
	// EmailMatch is "address" (default: an address is known only if that
	// address was seen) or "domain" (any address of a seen domain).
	EmailMatch string `yaml:"email_match"`
	// Trusted are globs on destination values that are always known, for
	// example "*@corp.example", "*.corp.example", "10.*".
	Trusted []string `yaml:"trusted"`
}

// DataFlowDetector flags arguments that carry values from labelled
// results.
type DataFlowDetector struct {
	Disabled bool `yaml:"disabled"`
}

// RiskConfig shapes the session risk score.
type RiskConfig struct {
	// HalfLife is how long it takes the score to halve when nothing is
	// flagged (default 10m).
	HalfLife time.Duration `yaml:"half_life"`
	// Scores override DefaultFlagScores per flag kind (0..1).
	Scores map[string]float64 `yaml:"scores"`
}

// DetectLimits bound the detector state of one session.
type DetectLimits struct {
	Recent       int `yaml:"recent"`       // calls remembered for windows (default 128)
	Fingerprints int `yaml:"fingerprints"` // data-flow fingerprints (default 1024)
	Sources      int `yaml:"sources"`      // results those come from (default 64)
	Destinations int `yaml:"destinations"` // known destinations (default 256)
	ResultBytes  int `yaml:"result_bytes"` // bytes of each result inspected (default 65536)
}

// ParseDetectorConfig decodes one profile's detector configuration from
// YAML, refusing unknown keys, and validates it.
func ParseDetectorConfig(data []byte) (DetectorConfig, error) {
	var c DetectorConfig
	if err := decodeStrict(data, &c); err != nil {
		return c, fmt.Errorf("decode detector config: %w", err)
	}
	if err := c.Validate(); err != nil {
		return c, err
	}
	return c, nil
}

// Validate reports every problem of the configuration, each saying how to
// fix it.
func (c DetectorConfig) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if s := c.Sequence; s.RareBelow < 0 || s.RareBelow >= 1 {
		bad("sequence.rare_below: %v is out of range: use a share between 0 and 1, such as 0.02", s.RareBelow)
	}
	if s := c.Sequence; s.NGram != 0 && s.NGram != 2 && s.NGram != 3 {
		bad("sequence.ngram: %d is not supported: use 2 (transitions) or 3 (also 3-tool sequences)", s.NGram)
	}
	if c.Sequence.MinTraces < 0 {
		bad("sequence.min_traces: %d is negative: use 0 or more", c.Sequence.MinTraces)
	}
	for name, v := range map[string]int{
		"rate.max_calls": c.Rate.MaxCalls, "rate.max_repeats": c.Rate.MaxRepeats, "rate.max_fan_out": c.Rate.MaxFanOut,
		"probe.max_denied": c.Probe.MaxDenied, "limits.recent": c.Limits.Recent, "limits.fingerprints": c.Limits.Fingerprints,
		"limits.sources": c.Limits.Sources, "limits.destinations": c.Limits.Destinations, "limits.result_bytes": c.Limits.ResultBytes,
	} {
		if v < 0 {
			bad("%s: %d is negative: use a positive number, or leave it out for the default", name, v)
		}
	}
	for name, v := range map[string]time.Duration{"rate.window": c.Rate.Window, "probe.window": c.Probe.Window, "risk.half_life": c.Risk.HalfLife} {
		if v < 0 {
			bad("%s: %v is negative: use a duration such as 1m", name, v)
		}
	}
	if c.Limits.Recent > 4096 || c.Limits.Fingerprints > 16384 || c.Limits.Destinations > 4096 || c.Limits.Sources > 1024 {
		bad("limits: at most recent 4096, fingerprints 16384, destinations 4096, sources 1024, to keep the session record small")
	}
	if c.Limits.Sources > 0 && c.Limits.Sources < 2 {
		bad("limits.sources: %d is too small: use at least 2", c.Limits.Sources)
	}
	if m := c.Destinations.EmailMatch; m != "" && m != "address" && m != "domain" {
		bad("destinations.email_match: %q is unknown: use address or domain", m)
	}
	for i, g := range c.Destinations.Trusted {
		if err := validGlob(g); err != nil {
			bad("destinations.trusted[%d]: %v", i, err)
		}
	}
	c.Injection.validate(bad)
	for kind, v := range c.Risk.Scores {
		if _, ok := DefaultFlagScores[kind]; !ok {
			bad("risk.scores: unknown flag kind %q: use one of %s", kind, strings.Join(flagKinds(), ", "))
		}
		if v < 0 || v > 1 || math.IsNaN(v) {
			bad("risk.scores.%s: %v is out of range: use a score between 0 and 1", kind, v)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid detector config: %w", errors.Join(errs...))
	}
	return nil
}

func flagKinds() []string {
	out := make([]string, 0, len(DefaultFlagScores))
	for k := range DefaultFlagScores {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func (c DetectorConfig) withDefaults() DetectorConfig {
	def := func(l *[]string, v ...string) {
		if len(*l) == 0 {
			*l = v
		}
	}
	def(&c.Labels.Untrusted, LabelUntrustedContent)
	def(&c.Labels.Private, LabelPrivateData)
	def(&c.Labels.Credential, LabelCredential)
	def(&c.Labels.Send, LabelExternalSend)
	def(&c.Labels.Escalation, LabelCredential, LabelDestructive)
	setF := func(v *float64, d float64) {
		if *v == 0 {
			*v = d
		}
	}
	setI := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	setD := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	setF(&c.Sequence.RareBelow, 0.02)
	setI(&c.Sequence.MinTraces, 5)
	setI(&c.Sequence.NGram, 3)
	setD(&c.Rate.Window, time.Minute)
	setI(&c.Rate.MaxCalls, 30)
	setI(&c.Rate.MaxRepeats, 5)
	setI(&c.Rate.MaxFanOut, 20)
	setD(&c.Probe.Window, 10*time.Minute)
	setI(&c.Probe.MaxDenied, 3)
	if c.Destinations.EmailMatch == "" {
		c.Destinations.EmailMatch = "address"
	}
	setD(&c.Risk.HalfLife, 10*time.Minute)
	setI(&c.Limits.Recent, 128)
	setI(&c.Limits.Fingerprints, 1024)
	setI(&c.Limits.Sources, 64)
	setI(&c.Limits.Destinations, 256)
	setI(&c.Limits.ResultBytes, 64<<10)
	return c
}

// Detectors runs the call-chain detectors of one profile. It is immutable
// and safe for concurrent use; all per-session state is in DetectState.
// None of its methods does I/O.
//
// Per call, the gateway:
//
//  1. decodes the session's DetectState (UnmarshalDetectState);
//  2. calls Inspect and sets Input.Flags, Input.Session.Risk and
//     Input.Taint (= state.Taint()) from it, then Set.Decide;
//  3. calls Record with the decision's action (Record reads Input.Flags
//     to update the risk);
//  4. for a forwarded call, calls ObserveResult with the result's text
//     and stores the returned tags in HistoryEntry.ResultTags;
//  5. commits state.Marshal() with the call record.
type Detectors struct {
	cfg    DetectorConfig
	base   *Baseline
	scores map[string]float64
	inj    injectionScorer
}

// NewDetectors validates cfg and returns detectors using baseline b (nil:
// no baseline, so the sequence detector is off and only trusted results
// and configured globs make a destination known).
func NewDetectors(cfg DetectorConfig, b *Baseline) (*Detectors, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	scores := make(map[string]float64, len(DefaultFlagScores))
	for k, v := range DefaultFlagScores {
		scores[k] = v
	}
	for k, v := range cfg.Risk.Scores {
		scores[k] = v
	}
	if b != nil {
		for _, p := range b.Profiles {
			if p.outOf == nil {
				p.index()
			}
		}
	}
	return &Detectors{cfg: cfg, base: b, scores: scores, inj: newInjectionScorer(cfg)}, nil
}

// Config returns the configuration in use, defaults filled in.
func (d *Detectors) Config() DetectorConfig { return d.cfg }

// Risk returns the session's risk score at now: the stored score decayed
// by the configured half-life. For the admin API.
func (d *Detectors) Risk(st *DetectState, now time.Time) float64 {
	return d.decay(st.risk, st.riskAt, now)
}

// Risk combination (documented in README.md): each flag has a score s in
// [0, 1]; the session's risk r is a noisy-OR of everything flagged so
// far, decaying with time:
//
//	r(now) = 1 - (1 - r(t)·2^-((now-t)/half_life)) · Π (1 - s_i)
//
// so two flags of 0.5 give 0.75, and a quiet session halves its risk every
// half-life.
func (d *Detectors) decay(r float64, at, now time.Time) float64 {
	if r <= 0 || at.IsZero() || !now.After(at) {
		return r
	}
	return r * math.Exp2(-float64(now.Sub(at))/float64(d.cfg.Risk.HalfLife))
}

func (d *Detectors) combine(st *DetectState, now time.Time, flags []Flag) float64 {
	keep := 1 - d.decay(st.risk, st.riskAt, now)
	for _, f := range flags {
		keep *= 1 - math.Min(1, math.Max(0, f.Score))
	}
	return math.Min(1, math.Max(0, 1-keep))
}

func (d *Detectors) flag(kind, format string, args ...any) Flag {
	return Flag{Kind: kind, Detail: fmt.Sprintf(format, args...), Score: d.scores[kind]}
}

func hasAny(labels, of []string) bool {
	for _, l := range labels {
		if slices.Contains(of, l) {
			return true
		}
	}
	return false
}

func (d *Detectors) cats(labels []string) uint8 {
	var c uint8
	if hasAny(labels, d.cfg.Labels.Untrusted) {
		c |= catUntrusted
	}
	if hasAny(labels, d.cfg.Labels.Private) {
		c |= catPrivate
	}
	if hasAny(labels, d.cfg.Labels.Credential) {
		c |= catCredential
	}
	return c
}

func h32(s string) uint32 { return uint32(fnv64(s)) }

// Inspect runs every enabled detector on the call about to be decided and
// returns the flags it raises and the session's risk including them. It
// does not change in, nor anything of st that Marshal encodes: it only
// keeps in st the values it found in the call's arguments, which Record
// of the same call reuses.
func (d *Detectors) Inspect(st *DetectState, in *Input) ([]Flag, float64) {
	var flags []Flag
	seq := st.calls + 1
	c := &in.Call
	if !d.cfg.Sequence.Disabled {
		flags = d.sequence(flags, st, in, seq)
	}
	if !d.cfg.Rate.Disabled {
		flags = d.rate(flags, st, in, seq)
	}
	if !d.cfg.Probe.Disabled {
		flags = d.probe(flags, st, in, seq)
	}
	if !d.cfg.Injection.Disabled {
		flags = d.injection(flags, st, in, seq)
	}
	st.inspected = nil
	send := !d.cfg.Destinations.Disabled && hasAny(c.Labels, d.cfg.Labels.Send)
	if send || !d.cfg.DataFlow.Disabled && st.taint.Len() > 0 {
		if cv, ok := newCallValues(c.Args); ok {
			// Record of this call reads the same values.
			st.inspected = cv
			if send {
				flags = d.destinations(flags, st, in, seq, cv)
			}
			if !d.cfg.DataFlow.Disabled && st.taint.Len() > 0 {
				flags = d.dataFlow(flags, st, in, seq, cv)
			}
		}
		// Unparsable arguments are the policy's to refuse; the
		// detectors have nothing to say about them.
	}
	return flags, d.combine(st, in.Now, flags)
}

// callValues are the string and number leaves of one call's arguments and
// the entities in each, found once per call for every detector that reads
// them.
type callValues struct {
	args   string // the arguments' text
	leaves []leaf
	ents   []entity
	end    []int // the entities of leaves[i] are ents[end[i-1]:end[i]]
}

// newCallValues parses raw; ok is false if it is not a JSON object.
func newCallValues(raw []byte) (cv *callValues, ok bool) {
	args, err := ParseArgs(raw)
	if err != nil {
		return nil, false
	}
	cv = &callValues{args: string(raw), leaves: argLeaves(args)}
	cv.end = make([]int, len(cv.leaves))
	for i, l := range cv.leaves {
		entities(l.value, func(e entity) { cv.ents = append(cv.ents, e) })
		cv.end[i] = len(cv.ents)
	}
	return cv, true
}

// entities returns the entities of leaves[i], in the order entities()
// finds them.
func (cv *callValues) entities(i int) []entity {
	lo := 0
	if i > 0 {
		lo = cv.end[i-1]
	}
	return cv.ents[lo:cv.end[i]]
}

func (d *Detectors) baselineProfile(in *Input) (*ProfileBaseline, string) {
	if d.base == nil {
		return nil, ""
	}
	name := d.cfg.Sequence.Profile
	if name == "" {
		name = in.Session.Profile
	}
	return d.base.Profiles[name], name
}

func (d *Detectors) sequence(flags []Flag, st *DetectState, in *Input, seq uint32) []Flag {
	pb, profile := d.baselineProfile(in)
	if pb == nil || pb.Traces < d.cfg.Sequence.MinTraces {
		return flags
	}
	name := in.Call.Name
	if pb.Tools[name] == 0 {
		return append(flags, d.flag(FlagUnseenTool, "call #%d %s: tool never called in %d baseline sessions of profile %q",
			seq, name, pb.Traces, profile))
	}
	prev := st.last[1]
	if prev == "" {
		prev = startToken
	} else if pb.Tools[prev] == 0 {
		return flags // the previous tool was flagged already
	}
	n, out := pb.Transitions[prev+">"+name], pb.outOf[prev]
	what := "after " + prev
	if prev == startToken {
		what = "as the first call"
	}
	switch {
	case n == 0:
		return append(flags, d.flag(FlagUnseenTransition, "call #%d %s %s: never seen in the baseline of profile %q (%d calls out of it)",
			seq, name, what, profile, out))
	case float64(n) < d.cfg.Sequence.RareBelow*float64(out):
		return append(flags, d.flag(FlagRareTransition, "call #%d %s %s: seen %d of %d times in the baseline of profile %q",
			seq, name, what, n, out, profile))
	}
	if d.cfg.Sequence.NGram == 3 && st.last[0] != "" && pb.Transitions[st.last[0]+">"+prev] > 0 &&
		pb.NGrams[st.last[0]+">"+prev+">"+name] == 0 {
		flags = append(flags, d.flag(FlagUnseenSequence, "calls #%d-#%d %s > %s > %s: sequence never seen in the baseline of profile %q",
			seq-2, seq, st.last[0], prev, name, profile))
	}
	return flags
}

func (d *Detectors) rate(flags []Flag, st *DetectState, in *Input, seq uint32) []Flag {
	since := in.Now.Add(-d.cfg.Rate.Window).UnixMilli()
	tool, args := h32(in.Call.Name), fnv32Args(in.Call.Args)
	calls, same := 1, 1
	distinct := []uint32{args}
	for i := len(st.recent) - 1; i >= 0 && st.recent[i].at >= since; i-- {
		r := st.recent[i]
		calls++
		if r.tool != tool {
			continue
		}
		if r.args == args {
			same++
		} else if len(distinct) <= d.cfg.Rate.MaxFanOut && !slices.Contains(distinct, r.args) {
			distinct = append(distinct, r.args)
		}
	}
	w := d.cfg.Rate.Window
	if calls > d.cfg.Rate.MaxCalls {
		flags = append(flags, d.flag(FlagBurst, "call #%d %s: %d calls in the last %v, above the norm of %d",
			seq, in.Call.Name, calls, w, d.cfg.Rate.MaxCalls))
	}
	if same > d.cfg.Rate.MaxRepeats {
		flags = append(flags, d.flag(FlagRepeatedCall, "call #%d %s: the same arguments %d times in the last %v (at most %d)",
			seq, in.Call.Name, same, w, d.cfg.Rate.MaxRepeats))
	}
	if len(distinct) > d.cfg.Rate.MaxFanOut {
		flags = append(flags, d.flag(FlagFanOut, "call #%d %s: more than %d distinct argument sets in the last %v",
			seq, in.Call.Name, d.cfg.Rate.MaxFanOut, w))
	}
	return flags
}

// fnv32Args hashes raw arguments; surrounding space does not count.
func fnv32Args(raw []byte) uint32 {
	return uint32(fnv64b(bytes.TrimSpace(raw)))
}

func (d *Detectors) probe(flags []Flag, st *DetectState, in *Input, seq uint32) []Flag {
	since := in.Now.Add(-d.cfg.Probe.Window).UnixMilli()
	var denied []string
	first := st.calls - uint32(len(st.recent)) + 1
	for i, r := range st.recent {
		if r.at >= since && (r.decision == ActionDeny || r.decision == ActionRevoke) {
			denied = append(denied, fmt.Sprintf("#%d", first+uint32(i)))
		}
	}
	if len(denied) >= d.cfg.Probe.MaxDenied {
		flags = append(flags, d.flag(FlagDeniedCalls, "call #%d %s: %d calls denied in the last %v (%s)",
			seq, in.Call.Name, len(denied), d.cfg.Probe.Window, strings.Join(denied, ", ")))
	}
	if in.OutOfScope != "" {
		flags = append(flags, d.flag(FlagOutOfScope, "call #%d %s: outside the session's scope (%d such attempts so far)",
			seq, in.Call.Name, st.outOfScope+1))
	}
	if st.untrustedAt > 0 && hasAny(in.Call.Labels, d.cfg.Labels.Escalation) {
		var which []string
		for _, l := range in.Call.Labels {
			if slices.Contains(d.cfg.Labels.Escalation, l) {
				which = append(which, l)
			}
		}
		flags = append(flags, d.flag(FlagEscalation, "call #%d %s (%s) after untrusted content entered the session at call #%d %s",
			seq, in.Call.Name, strings.Join(which, ", "), st.untrustedAt, st.untrustedName))
	}
	return flags
}

// destKey is the key under which a destination is known: e-mail
// addresses by address or by domain, as configured.
func (d *Detectors) destKey(e entity) string {
	if e.kind == entEmail && d.cfg.Destinations.EmailMatch == "domain" {
		return "email@:" + e.value[strings.LastIndexByte(e.value, '@')+1:]
	}
	return e.key()
}

func (d *Detectors) knownDest(st *DetectState, pb *ProfileBaseline, e entity) bool {
	key := d.destKey(e)
	if slices.Contains(st.known, fnv64(key)) {
		return true
	}
	if pb != nil && pb.dests[key] {
		return true
	}
	for _, g := range d.cfg.Destinations.Trusted {
		if Glob(g, e.value) {
			return true
		}
	}
	return false
}

func (d *Detectors) destinations(flags []Flag, st *DetectState, in *Input, seq uint32, cv *callValues) []Flag {
	pb, _ := d.baselineProfile(in)
	var found []string
	seen := map[string]bool{}
	for i, l := range cv.leaves {
		for _, e := range cv.entities(i) {
			if !e.destination() || seen[e.key()] {
				continue
			}
			seen[e.key()] = true
			if !d.knownDest(st, pb, e) {
				found = append(found, fmt.Sprintf("%s %s %s", l.path, e.kind, quote(e.value)))
			}
		}
	}
	if len(found) == 0 {
		return flags
	}
	return append(flags, d.flag(FlagNewDestination, "call #%d %s: %s not seen in trusted results or the baseline",
		seq, in.Call.Name, joinMax(found, 5)))
}

func joinMax(items []string, max int) string {
	if len(items) <= max {
		return strings.Join(items, "; ")
	}
	return strings.Join(items[:max], "; ") + fmt.Sprintf("; and %d more", len(items)-max)
}

// taintHit is one argument value that carries a fingerprinted value.
type taintHit struct {
	path, what string
	fp         fingerprint
}

// match calls f for every fingerprint that s carries: its entities, its
// whole value, and its runs of words. what describes the matched value.
func (t *TaintSet) match(s string, f func(what string, fp fingerprint) bool) {
	if t.Len() == 0 {
		return
	}
	var ents []entity
	entities(s, func(e entity) { ents = append(ents, e) })
	t.matchFound(s, ents, f)
}

// matchFound is match with the entities of s already found.
func (t *TaintSet) matchFound(s string, ents []entity, f func(what string, fp fingerprint) bool) {
	if t.Len() == 0 {
		return
	}
	for _, e := range ents {
		if fp, ok := t.lookup(fnv64(e.key())); ok {
			if !f(e.kind+" "+quote(e.value), fp) {
				return
			}
		}
	}
	var wbuf [64]word
	ws := words(s, wbuf[:0])
	if h, ok := valueHash(ws); ok {
		if fp, ok := t.lookup(h); ok {
			if !f("value "+quote(s), fp) {
				return
			}
		}
	}
	var hbuf [64]uint64
	for i, h := range shingles(ws, hbuf[:0]) {
		if fp, ok := t.lookup(h); ok {
			run := make([]string, shingleWords)
			for j, w := range ws[i : i+shingleWords] {
				run[j] = w.text(s)
			}
			if !f("text "+quote(strings.Join(run, " ")), fp) {
				return
			}
		}
	}
}

func (d *Detectors) dataFlow(flags []Flag, st *DetectState, in *Input, seq uint32, cv *callValues) []Flag {
	var hits []taintHit
	var cats uint8
	for i, l := range cv.leaves {
		st.taint.matchFound(l.value, cv.entities(i), func(what string, fp fingerprint) bool {
			hits = append(hits, taintHit{l.path, what, fp})
			cats |= fp.cats
			return false // one hit per argument value is enough to explain it
		})
	}
	if len(hits) == 0 {
		return flags
	}
	describe := func(want uint8) string {
		var out []string
		for _, h := range hits {
			if h.fp.cats&want == 0 {
				continue
			}
			src := st.taint.source(h.fp.src)
			out = append(out, fmt.Sprintf("%s carries %s from the result of call #%d %s [%s]",
				h.path, h.what, src.seq, src.name, strings.Join(catNames(h.fp.cats), ", ")))
		}
		return joinMax(out, 3)
	}
	prefix := fmt.Sprintf("call #%d %s: ", seq, in.Call.Name)
	if !hasAny(in.Call.Labels, d.cfg.Labels.Send) {
		return append(flags, d.flag(FlagDataFlow, "%s%s", prefix, describe(catUntrusted|catPrivate|catCredential)))
	}
	if cats&catUntrusted != 0 {
		flags = append(flags, d.flag(FlagInjectionChain, "%s%s", prefix, describe(catUntrusted)))
	}
	if cats&(catPrivate|catCredential) != 0 {
		flags = append(flags, d.flag(FlagExfiltration, "%s%s", prefix, describe(catPrivate|catCredential)))
	}
	return flags
}

// Record updates st after the call in was decided with action: counters,
// recent calls, the last tools, destinations of a forwarded send (now
// known), and the risk from in.Flags (as Inspect returned them).
func (d *Detectors) Record(st *DetectState, in *Input, action Action) {
	st.risk = d.combine(st, in.Now, in.Flags)
	st.riskAt = in.Now
	st.calls++
	if action == ActionDeny || action == ActionRevoke {
		st.denied++
	}
	if in.OutOfScope != "" {
		st.outOfScope++
	}
	st.last[0], st.last[1] = st.last[1], in.Call.Name
	if slices.ContainsFunc(in.Flags, func(f Flag) bool { return f.Kind == FlagPromptInjection }) {
		st.injectReported = st.injectLast
	}
	st.recent = append(st.recent, recentCall{at: in.Now.UnixMilli(), tool: h32(in.Call.Name), args: fnv32Args(in.Call.Args), decision: action})
	if over := len(st.recent) - d.cfg.Limits.Recent; over > 0 {
		st.recent = slices.Delete(st.recent, 0, over)
	}
	if action.Forwards() && !d.cfg.Destinations.Disabled && hasAny(in.Call.Labels, d.cfg.Labels.Send) {
		// A send that went through (allowed by policy, or approved by a
		// human) makes its destinations known for the rest of the
		// session: it was flagged once, when it was new.
		cv, ok := st.inspected, true
		if cv == nil || cv.args != string(in.Call.Args) {
			// Not the call Inspect last saw: find its values again.
			cv, ok = newCallValues(in.Call.Args)
		}
		if ok {
			for _, e := range cv.ents {
				if e.destination() {
					d.addKnown(st, e)
				}
			}
		}
	}
	st.inspected = nil
}

func (d *Detectors) addKnown(st *DetectState, e entity) {
	h := fnv64(d.destKey(e))
	if slices.Contains(st.known, h) {
		return
	}
	st.known = append(st.known, h)
	if over := len(st.known) - d.cfg.Limits.Destinations; over > 0 {
		st.known = slices.Delete(st.known, 0, over)
	}
}

// ObserveResult inspects the result text of a call that was forwarded
// (call it after Record of that call) and returns the tags to store on its
// history entry: the taint categories of the tool's labels
// (untrusted_content, private_data, credential), and prompt_injection
// when the injection detector scored the result as carrying instructions
// addressed to the model.
//
// Results of untrusted tools are fingerprinted as tainted and never make
// a destination known: a prompt injection must not be able to vouch for
// its own address. Results of every other tool make the destinations they
// mention known, unless they carry instructions. Results of private and
// credential tools are fingerprinted too, and so are results that carry
// instructions (category prompt_injection). Only the first
// Limits.ResultBytes bytes are read.
func (d *Detectors) ObserveResult(st *DetectState, call Call, result string, labels []string, now time.Time) []string {
	_ = now // results carry no time-dependent state yet; kept for a stable API
	if len(result) > d.cfg.Limits.ResultBytes {
		result = result[:d.cfg.Limits.ResultBytes]
	}
	cats := d.cats(labels)
	seq := st.calls
	if cats&catUntrusted != 0 && st.untrustedAt == 0 {
		st.untrustedAt, st.untrustedName = seq, call.Name
	}
	if !d.cfg.Injection.Disabled && d.inj.scores(labels) {
		if sc := d.inj.score(result); sc.Hit {
			cats |= catInjection
			st.noteInjection(seq, call.Name, sc)
		}
	}
	if cats&(catUntrusted|catInjection) == 0 {
		if !d.cfg.Destinations.Disabled {
			entities(result, func(e entity) {
				if e.destination() {
					d.addKnown(st, e)
				}
			})
		}
	}
	if cats != 0 && !d.cfg.DataFlow.Disabled {
		st.taint.add(taintSource{seq: seq, cats: cats, name: call.Name}, resultFingerprints(result, d.cfg.Limits.Fingerprints),
			d.cfg.Limits.Fingerprints, d.cfg.Limits.Sources)
	}
	return catNames(cats)
}

// resultFingerprints returns at most max fingerprints of a result:
// entities first, then whole values, then winnowed word runs.
func resultFingerprints(text string, max int) []uint64 {
	var out []uint64
	seen := map[uint64]bool{}
	add := func(h uint64) {
		if len(out) < max && !seen[h] {
			seen[h] = true
			out = append(out, h)
		}
	}
	entities(text, func(e entity) { add(fnv64(e.key())) })
	// One buffer for the words of every value and of the whole text, at
	// about one word in six bytes of prose: growing it from a few words
	// would take many allocations.
	ws := make([]word, 0, len(text)/6)
	resultValues(text, func(v string) {
		// A value of shingleWords*4 words or more has no value hash.
		ws = wordsUpTo(v, ws, shingleWords*4)
		if h, ok := valueHash(ws); ok {
			add(h)
		}
	})
	ws = words(text, ws)
	winnow(shingles(ws, make([]uint64, 0, len(ws))), add)
	return out
}
