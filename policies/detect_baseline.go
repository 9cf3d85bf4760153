package policies

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
)

// Baseline is what benign sessions look like, per profile: which tools
// they call, which tool follows which, and which destinations their
// arguments name. It is learned offline (LearnBaseline, `toolgate baseline
// learn`) and read-only once loaded.
type Baseline struct {
	Version  int                         `json:"version"`
	Profiles map[string]*ProfileBaseline `json:"profiles"`
}

// ProfileBaseline is the baseline of one profile. Transition keys are
// "from>to", with "^" for the start of a session; n-gram keys are
// "a>b>c". Destinations are entity keys such as "email:ann@corp.example",
// "host:api.corp.example", "iban:DE89370400440532013000", "ip:192.0.2.1".
type ProfileBaseline struct {
	Traces       int            `json:"traces"`
	Calls        int            `json:"calls"`
	Tools        map[string]int `json:"tools"`
	Transitions  map[string]int `json:"transitions"`
	NGrams       map[string]int `json:"ngrams,omitempty"`
	Destinations []string       `json:"destinations,omitempty"`

	// Built on load: calls out of each tool, destination set.
	outOf map[string]int
	dests map[string]bool
}

// BaselineTrace is one benign session to learn from.
type BaselineTrace struct {
	Profile string
	Calls   []BaselineCall
}

// BaselineCall is one call of a BaselineTrace. Tool is the name the
// gateway would show (Call.Name, for example "bank__send_money"). Result
// is not learned from: a benign session's results may still carry
// content nobody vetted.
type BaselineCall struct {
	Tool   string
	Args   json.RawMessage
	Result string
}

const (
	baselineVersion = 1
	startToken      = "^"
)

// LearnBaseline counts tools, transitions, 3-grams and argument
// destinations of the traces, per profile.
func LearnBaseline(traces []BaselineTrace) *Baseline {
	b := &Baseline{Version: baselineVersion, Profiles: map[string]*ProfileBaseline{}}
	for _, tr := range traces {
		b.Add(tr)
	}
	return b
}

// Add learns one more trace into b, for example a live session that ran
// in shadow without findings. b must not be in use by Detectors while
// Add runs.
func (b *Baseline) Add(tr BaselineTrace) {
	if b.Profiles == nil {
		b.Profiles = map[string]*ProfileBaseline{}
	}
	p := b.Profiles[tr.Profile]
	if p == nil {
		p = &ProfileBaseline{Tools: map[string]int{}, Transitions: map[string]int{}, NGrams: map[string]int{}}
		b.Profiles[tr.Profile] = p
	}
	p.Traces++
	prev2, prev := "", startToken
	dests := map[string]bool{}
	for _, d := range p.Destinations {
		dests[d] = true
	}
	for _, c := range tr.Calls {
		p.Calls++
		p.Tools[c.Tool]++
		p.Transitions[prev+">"+c.Tool]++
		if prev2 != "" {
			p.NGrams[prev2+">"+prev+">"+c.Tool]++
		}
		prev2, prev = prev, c.Tool
		args, err := ParseArgs(c.Args)
		if err != nil {
			continue
		}
		for _, l := range argLeaves(args) {
			entities(l.value, func(e entity) {
				if e.destination() {
					dests[e.key()] = true
				}
			})
		}
	}
	p.Destinations = p.Destinations[:0]
	for d := range dests {
		p.Destinations = append(p.Destinations, d)
	}
	slices.Sort(p.Destinations)
	p.index()
}

func (p *ProfileBaseline) index() {
	p.outOf = map[string]int{}
	for k, n := range p.Transitions {
		from, _, _ := strings.Cut(k, ">")
		p.outOf[from] += n
	}
	p.dests = make(map[string]bool, len(p.Destinations))
	for _, d := range p.Destinations {
		p.dests[d] = true
		if addr, ok := strings.CutPrefix(d, entEmail+":"); ok {
			// For DestinationDetector.EmailMatch "domain".
			p.dests["email@:"+addr[strings.LastIndexByte(addr, '@')+1:]] = true
		}
	}
}

// Marshal encodes b as indented JSON with sorted keys.
func (b *Baseline) Marshal() ([]byte, error) {
	out, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode baseline: %w", err)
	}
	return append(out, '\n'), nil
}

// ParseBaseline decodes a baseline written by Marshal, refusing unknown
// fields.
func ParseBaseline(data []byte) (*Baseline, error) {
	var b Baseline
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		return nil, fmt.Errorf("decode baseline: %w", err)
	}
	if b.Version != baselineVersion {
		return nil, fmt.Errorf("decode baseline: version %d, want %d: relearn it with `toolgate baseline learn`", b.Version, baselineVersion)
	}
	for name, p := range b.Profiles {
		if p == nil {
			return nil, fmt.Errorf("decode baseline: profile %q is null", name)
		}
		p.index()
	}
	return &b, nil
}

// LoadBaseline reads a baseline file.
func LoadBaseline(path string) (*Baseline, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load baseline: %w", err)
	}
	b, err := ParseBaseline(data)
	if err != nil {
		return nil, fmt.Errorf("load baseline %s: %w", path, err)
	}
	return b, nil
}
