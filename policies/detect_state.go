package policies

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"
)

// DetectState is what the call-chain detectors remember about one session.
// It lives in the session record as an opaque blob (Marshal,
// UnmarshalDetectState) and is read and written only by the gateway's
// decision path: one goroutine at a time, so it has no lock.
//
// Its size is bounded by DetectorConfig.Limits: with the defaults (128
// recent calls, 1024 fingerprints, 256 known destinations, 64 sources) the
// encoding is at most about 19 KiB.
type DetectState struct {
	risk   float64
	riskAt time.Time

	calls, denied, outOfScope uint32
	// untrustedAt is the number (1-based) of the first call whose result
	// was untrusted content; 0 if none yet.
	untrustedAt   uint32
	untrustedName string
	// last holds the names of the previous two calls, most recent last.
	last [2]string
	// recent holds the latest calls, oldest first.
	recent []recentCall
	taint  TaintSet
	// known holds hashes of destination keys the session may use: seen in
	// trusted results or in calls that were let through. Oldest first.
	known []uint64

	// Results that carried instructions addressed to the model
	// (detect_injection.go): the first and the latest (call numbers), how
	// many, the latest's tool and markers, and the latest hit that a flag
	// has reported.
	injectFirst, injectLast, injectHits, injectReported uint32
	injectName, injectMarkers                           string

	// inspected holds the values Inspect found in the arguments of the
	// call it last inspected, for Record of that call. Not encoded.
	inspected *callValues
}

// noteInjection records that the result of call seq (tool name) scored
// sc.
func (s *DetectState) noteInjection(seq uint32, name string, sc InjectionScore) {
	if s.injectFirst == 0 {
		s.injectFirst = seq
	}
	s.injectLast, s.injectName = seq, name
	s.injectHits++
	s.injectMarkers = fmt.Sprintf("%s; score %.1f", strings.Join(sc.Markers, ", "), sc.Score)
}

// Injected returns the call number (1-based) of the latest call whose
// result carried instructions addressed to the model, and how many results
// did; 0, 0 if none.
func (s *DetectState) Injected() (latest, results int) {
	return int(s.injectLast), int(s.injectHits)
}

// recentCall is one call as the rate and probe detectors remember it.
type recentCall struct {
	at       int64  // Unix milliseconds
	tool     uint32 // hash of the tool name
	args     uint32 // hash of the raw arguments
	decision Action
}

// Risk returns the stored risk score and when it was last updated; it
// decays from there (see Detectors.Risk for the value at a given time).
func (s *DetectState) Risk() (float64, time.Time) { return s.risk, s.riskAt }

// Taint returns the session's data-flow fingerprints, for Input.Taint.
func (s *DetectState) Taint() *TaintSet { return &s.taint }

// Calls is the number of calls recorded.
func (s *DetectState) Calls() int { return int(s.calls) }

// Taint categories: where a fingerprinted value came from.
const (
	catUntrusted uint8 = 1 << iota
	catPrivate
	catCredential
	catInjection
)

// Names of the taint categories, as tainted(), taint_sources() and result
// tags give them.
const (
	LabelUntrustedContent = "untrusted_content"
	LabelPrivateData      = "private_data"
	LabelCredential       = "credential"
	LabelExternalSend     = "external_send"
	LabelDestructive      = "destructive"
	// LabelPromptInjection (detect_injection.go) is also a category.
)

func catNames(c uint8) []string {
	var out []string
	if c&catUntrusted != 0 {
		out = append(out, LabelUntrustedContent)
	}
	if c&catPrivate != 0 {
		out = append(out, LabelPrivateData)
	}
	if c&catCredential != 0 {
		out = append(out, LabelCredential)
	}
	if c&catInjection != 0 {
		out = append(out, LabelPromptInjection)
	}
	return out
}

// TaintSet holds fingerprints of values that came out of labelled tool
// results (untrusted content, private data, credentials) and answers
// whether a later value carries one. A nil *TaintSet holds nothing.
type TaintSet struct {
	fps     []fingerprint // sorted by hash
	sources []taintSource // oldest first
}

type fingerprint struct {
	h    uint64
	src  uint32 // call number of the result it came from
	cats uint8
}

type taintSource struct {
	seq  uint32 // call number
	cats uint8
	name string // tool name
}

// Len is the number of fingerprints held.
func (t *TaintSet) Len() int {
	if t == nil {
		return 0
	}
	return len(t.fps)
}

func (t *TaintSet) lookup(h uint64) (fingerprint, bool) {
	if t == nil {
		return fingerprint{}, false
	}
	i := sort.Search(len(t.fps), func(i int) bool { return t.fps[i].h >= h })
	if i < len(t.fps) && t.fps[i].h == h {
		return t.fps[i], true
	}
	return fingerprint{}, false
}

func (t *TaintSet) source(seq uint32) taintSource {
	for _, s := range t.sources {
		if s.seq == seq {
			return s
		}
	}
	return taintSource{seq: seq}
}

// add inserts fingerprints of one result, then drops the oldest results'
// fingerprints until at most maxFPs and maxSources remain.
func (t *TaintSet) add(src taintSource, hs []uint64, maxFPs, maxSources int) {
	if len(hs) == 0 {
		return
	}
	t.sources = append(t.sources, src)
	for _, h := range hs {
		i := sort.Search(len(t.fps), func(i int) bool { return t.fps[i].h >= h })
		if i < len(t.fps) && t.fps[i].h == h {
			// Seen before: the newest result names it, categories add up.
			t.fps[i].src = src.seq
			t.fps[i].cats |= src.cats
			continue
		}
		t.fps = slices.Insert(t.fps, i, fingerprint{h: h, src: src.seq, cats: src.cats})
	}
	for len(t.sources) > 1 && (len(t.fps) > maxFPs || len(t.sources) > maxSources) {
		old := t.sources[0].seq
		t.sources = t.sources[1:]
		t.fps = slices.DeleteFunc(t.fps, func(f fingerprint) bool { return f.src == old })
	}
	// Drop sources whose fingerprints were all taken over by newer ones.
	t.sources = slices.DeleteFunc(t.sources, func(s taintSource) bool {
		return !slices.ContainsFunc(t.fps, func(f fingerprint) bool { return f.src == s.seq })
	})
}

// Encoding: a version byte, then fixed-width little-endian fields and
// length-prefixed lists. Decoding checks every length against the input,
// so a corrupt blob is an error, never a panic or a huge allocation.
// Version 2 appends the injection detector's fields; version 1 blobs
// (written before it) still decode.
const stateVersion = 2

// Marshal encodes s for the session record.
func (s *DetectState) Marshal() []byte {
	return s.AppendMarshal(make([]byte, 0, s.marshalSize()))
}

// AppendMarshal appends the encoding of s to b and returns the extended
// buffer, so that a caller encoding the state on every call can reuse
// one buffer. The encoding is at most about 19 KiB (see DetectState).
func (s *DetectState) AppendMarshal(b []byte) []byte {
	b = slices.Grow(b, s.marshalSize())
	b = append(b, stateVersion)
	b = binary.LittleEndian.AppendUint64(b, math.Float64bits(s.risk))
	var at int64
	if !s.riskAt.IsZero() {
		at = s.riskAt.UnixMilli()
	}
	b = binary.LittleEndian.AppendUint64(b, uint64(at))
	b = binary.LittleEndian.AppendUint32(b, s.calls)
	b = binary.LittleEndian.AppendUint32(b, s.denied)
	b = binary.LittleEndian.AppendUint32(b, s.outOfScope)
	b = binary.LittleEndian.AppendUint32(b, s.untrustedAt)
	b = appendString(b, s.untrustedName)
	b = appendString(b, s.last[0])
	b = appendString(b, s.last[1])
	b = binary.LittleEndian.AppendUint32(b, uint32(len(s.recent)))
	for _, r := range s.recent {
		b = binary.LittleEndian.AppendUint64(b, uint64(r.at))
		b = binary.LittleEndian.AppendUint32(b, r.tool)
		b = binary.LittleEndian.AppendUint32(b, r.args)
		b = append(b, actionCode(r.decision))
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(s.taint.sources)))
	for _, src := range s.taint.sources {
		b = binary.LittleEndian.AppendUint32(b, src.seq)
		b = append(b, src.cats)
		b = appendString(b, src.name)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(s.taint.fps)))
	for _, f := range s.taint.fps {
		b = binary.LittleEndian.AppendUint64(b, f.h)
		b = binary.LittleEndian.AppendUint32(b, f.src)
		b = append(b, f.cats)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(s.known)))
	for _, h := range s.known {
		b = binary.LittleEndian.AppendUint64(b, h)
	}
	b = binary.LittleEndian.AppendUint32(b, s.injectFirst)
	b = binary.LittleEndian.AppendUint32(b, s.injectLast)
	b = binary.LittleEndian.AppendUint32(b, s.injectHits)
	b = binary.LittleEndian.AppendUint32(b, s.injectReported)
	b = appendString(b, s.injectName)
	return appendString(b, s.injectMarkers)
}

// marshalSize is the exact length of the encoding of s.
func (s *DetectState) marshalSize() int {
	n := 1 + 8 + 8 + 4*4 + // version, risk, riskAt, counters
		stringSize(s.untrustedName) + stringSize(s.last[0]) + stringSize(s.last[1]) +
		4 + len(s.recent)*17 +
		4 + len(s.taint.sources)*5 +
		4 + len(s.taint.fps)*13 +
		4 + len(s.known)*8 +
		4*4 + stringSize(s.injectName) + stringSize(s.injectMarkers)
	for _, src := range s.taint.sources {
		n += stringSize(src.name)
	}
	return n
}

// stringSize is the length of appendString's encoding of s.
func stringSize(s string) int { return 2 + min(len(s), math.MaxUint16) }

func appendString(b []byte, s string) []byte {
	if len(s) > math.MaxUint16 {
		s = s[:math.MaxUint16]
	}
	b = binary.LittleEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

var actionCodes = []Action{"", ActionAllow, ActionNarrow, ActionRequireApproval, ActionDeny, ActionRevoke}

func actionCode(a Action) byte {
	if i := slices.Index(actionCodes, a); i > 0 {
		return byte(i)
	}
	return 0
}

var errCorruptState = errors.New("corrupt detector state")

// UnmarshalDetectState decodes a state written by Marshal. Empty input is
// a new session's empty state.
func UnmarshalDetectState(data []byte) (*DetectState, error) {
	s := &DetectState{}
	if len(data) == 0 {
		return s, nil
	}
	version := data[0]
	if version != 1 && version != stateVersion {
		return nil, fmt.Errorf("decode detector state: version %d, want %d", version, stateVersion)
	}
	r := reader{b: data[1:]}
	r.names = r.namesBuf[:0]
	s.risk = math.Float64frombits(r.u64())
	if at := int64(r.u64()); at != 0 {
		s.riskAt = time.UnixMilli(at).UTC()
	}
	s.calls, s.denied, s.outOfScope, s.untrustedAt = r.u32(), r.u32(), r.u32(), r.u32()
	s.untrustedName, s.last[0], s.last[1] = r.str(), r.str(), r.str()
	// recent and known get room for the entry the next Record appends
	// (it then drops the oldest in place).
	n := r.count(17)
	s.recent = make([]recentCall, n, n+1)
	for i := range s.recent {
		s.recent[i] = recentCall{at: int64(r.u64()), tool: r.u32(), args: r.u32()}
		if c := int(r.byte()); c < len(actionCodes) {
			s.recent[i].decision = actionCodes[c]
		}
	}
	n = r.count(7)
	s.taint.sources = make([]taintSource, n)
	for i := range s.taint.sources {
		s.taint.sources[i] = taintSource{seq: r.u32(), cats: r.byte(), name: r.str()}
	}
	n = r.count(13)
	s.taint.fps = make([]fingerprint, n)
	for i := range s.taint.fps {
		s.taint.fps[i] = fingerprint{h: r.u64(), src: r.u32(), cats: r.byte()}
	}
	n = r.count(8)
	s.known = make([]uint64, n, n+1)
	for i := range s.known {
		s.known[i] = r.u64()
	}
	if version >= 2 {
		s.injectFirst, s.injectLast, s.injectHits, s.injectReported = r.u32(), r.u32(), r.u32(), r.u32()
		s.injectName, s.injectMarkers = r.str(), r.str()
	}
	if r.bad || len(r.b) != 0 {
		return nil, fmt.Errorf("decode detector state: %w", errCorruptState)
	}
	if !slices.IsSortedFunc(s.taint.fps, func(a, b fingerprint) int {
		return cmpU64(a.h, b.h)
	}) {
		return nil, fmt.Errorf("decode detector state: fingerprints out of order: %w", errCorruptState)
	}
	return s, nil
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// reader reads the fixed-width encoding; after the first short read every
// read returns zero and bad is set.
type reader struct {
	b   []byte
	bad bool
	// names holds the strings read so far: the state repeats a few tool
	// names (the last calls, every taint source), which then share one
	// copy.
	names    []string
	namesBuf [16]string
}

func (r *reader) take(n int) []byte {
	if r.bad || len(r.b) < n {
		r.bad = true
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) byte() byte {
	if b := r.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *reader) u16() uint16 {
	if b := r.take(2); b != nil {
		return binary.LittleEndian.Uint16(b)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if b := r.take(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (r *reader) u64() uint64 {
	if b := r.take(8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

func (r *reader) str() string {
	b := r.take(int(r.u16()))
	for _, s := range r.names {
		if s == string(b) {
			return s
		}
	}
	s := string(b)
	if len(s) > 0 && len(r.names) < cap(r.names) {
		r.names = append(r.names, s)
	}
	return s
}

// count reads a list length and checks that the input can hold that many
// elements of at least minSize bytes each.
func (r *reader) count(minSize int) int {
	n := int(r.u32())
	if n < 0 || n*minSize > len(r.b) {
		r.bad = true
		return 0
	}
	return n
}
