package gateway

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/toolgate/toolgate/policies"
	"github.com/toolgate/toolgate/sessions"
)

// ProfileConfig is what a session of an agent may do: its lifetime, scope,
// time windows and budget.
type ProfileConfig struct {
	// Lifetime is the absolute session lifetime. Default 1h.
	Lifetime time.Duration `yaml:"lifetime"`
	// IdleTimeout ends a session without calls for that long. 0: none.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// Tools lists globs over namespaced tool names the session may use:
	// its scope. Required ("*" for every tool).
	Tools []string `yaml:"tools"`
	// OutOfScope is what a call outside the scope gets: deny (default) or
	// revoke.
	OutOfScope string `yaml:"out_of_scope"`
	// Budget is the most calls a session may make. 0: no limit.
	Budget int64 `yaml:"budget"`
	// History bounds the calls a session remembers. Default 256.
	History int `yaml:"history"`
	// Labels are marks policies read as session.labels.
	Labels map[string]string `yaml:"labels"`
	// Windows, when set, restrict sessions to these times: a session is
	// opened only inside one and ends when it closes.
	Windows *WindowsConfig `yaml:"windows"`
	// Detectors, when set, turns the call-chain detectors on for the
	// profile's sessions; their flags and risk reach the policies.
	Detectors *policies.DetectorConfig `yaml:"detectors"`
	// Baseline is a file written by "toolgate baseline learn": the
	// sequence detector's norm for this profile.
	Baseline string `yaml:"baseline"`

	detectors *policies.Detectors
}

// WindowsConfig lists when sessions of a profile may run.
type WindowsConfig struct {
	// Zone is the IANA time zone of the weekly windows. Default UTC.
	Zone string `yaml:"zone"`
	// Weekly windows, such as Mon-Fri 09:00-17:00.
	Weekly []WeeklyWindow `yaml:"weekly"`
	// Maintenance lists approved windows with an absolute start and end.
	Maintenance []MaintenanceWindow `yaml:"maintenance"`

	loc *time.Location
}

// WeeklyWindow is a recurring window: on the given days, from start to end
// (end after start, both on the same day).
type WeeklyWindow struct {
	Days  string `yaml:"days"`  // "Mon-Fri", "Sat,Sun", "Mon"
	Start string `yaml:"start"` // "09:00"
	End   string `yaml:"end"`   // "17:00"

	days       [7]bool
	start, end time.Duration // from midnight
}

// MaintenanceWindow is one approved window.
type MaintenanceWindow struct {
	Start  time.Time `yaml:"start"`
	End    time.Time `yaml:"end"`
	Ticket string    `yaml:"ticket"` // the change approval it belongs to
}

var weekdays = map[string]time.Weekday{"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday,
	"wed": time.Wednesday, "thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday}

// validate fills defaults and checks the profile; name is for messages.
func (p *ProfileConfig) validate(name string) error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("profiles.%s.%s", name, fmt.Sprintf(format, args...)))
	}
	if p.Lifetime == 0 {
		p.Lifetime = time.Hour
	}
	if p.Lifetime < 0 {
		bad("lifetime: %v must be positive", p.Lifetime)
	}
	if p.IdleTimeout < 0 {
		bad("idle_timeout: %v must be positive, or 0 for none", p.IdleTimeout)
	}
	if len(p.Tools) == 0 {
		bad(`tools: list the tools the session may use (globs such as "demo__read_*", or "*" for all)`)
	}
	for i, g := range p.Tools {
		if strings.TrimSpace(g) == "" {
			bad("tools[%d]: empty glob", i)
		}
	}
	switch p.OutOfScope {
	case "":
		p.OutOfScope = "deny"
	case "deny", "revoke":
	default:
		bad("out_of_scope: %q is not deny or revoke", p.OutOfScope)
	}
	if p.Budget < 0 {
		bad("budget: %d must be positive, or 0 for no limit", p.Budget)
	}
	if p.History < 0 || p.History > 10000 {
		bad("history: %d is outside 1..10000", p.History)
	}
	if w := p.Windows; w != nil {
		if err := w.validate(); err != nil {
			bad("windows: %v", err)
		}
	}
	if p.Baseline != "" && p.Detectors == nil {
		bad("baseline: set detectors too (an empty detectors: {} turns them on with defaults)")
	}
	if p.Detectors != nil && p.detectors == nil {
		var base *policies.Baseline
		if p.Baseline != "" {
			b, err := policies.LoadBaseline(p.Baseline)
			if err != nil {
				bad("baseline: %v", err)
			}
			base = b
		}
		d, err := policies.NewDetectors(*p.Detectors, base)
		if err != nil {
			bad("detectors: %v", err)
		} else {
			p.detectors = d
		}
	}
	return errors.Join(errs...)
}

func (w *WindowsConfig) validate() error {
	if w.Zone == "" {
		w.Zone = "UTC"
	}
	loc, err := time.LoadLocation(w.Zone)
	if err != nil {
		return fmt.Errorf("zone %q: %v", w.Zone, err)
	}
	w.loc = loc
	if len(w.Weekly) == 0 && len(w.Maintenance) == 0 {
		return errors.New("give weekly or maintenance windows, or remove windows")
	}
	for i := range w.Weekly {
		if err := w.Weekly[i].parse(); err != nil {
			return fmt.Errorf("weekly[%d]: %v", i, err)
		}
	}
	for i, m := range w.Maintenance {
		if m.Start.IsZero() || !m.End.After(m.Start) {
			return fmt.Errorf("maintenance[%d]: start and end are required, end after start (RFC 3339 times)", i)
		}
	}
	return nil
}

func (ww *WeeklyWindow) parse() error {
	for _, part := range strings.Split(strings.ToLower(ww.Days), ",") {
		part = strings.TrimSpace(part)
		from, to, isRange := strings.Cut(part, "-")
		a, ok1 := weekdays[from]
		b, ok2 := a, true
		if isRange {
			b, ok2 = weekdays[to]
		}
		if !ok1 || !ok2 {
			return fmt.Errorf("days %q: use names such as Mon-Fri or Sat,Sun", ww.Days)
		}
		for d := a; ; d = (d + 1) % 7 {
			ww.days[d] = true
			if d == b {
				break
			}
		}
	}
	clock := func(s string) (time.Duration, error) {
		t, err := time.Parse("15:04", s)
		if err != nil {
			return 0, fmt.Errorf("%q is not a time of day such as 09:00", s)
		}
		return time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute, nil
	}
	var err error
	if ww.start, err = clock(ww.Start); err != nil {
		return fmt.Errorf("start: %v", err)
	}
	if ww.end, err = clock(ww.End); err != nil {
		return fmt.Errorf("end: %v", err)
	}
	if ww.end <= ww.start {
		return fmt.Errorf("end %s must be after start %s", ww.End, ww.Start)
	}
	return nil
}

// openUntil reports whether now is inside a window, and when that window
// closes. With no windows configured it is always open (zero end).
func (w *WindowsConfig) openUntil(now time.Time) (bool, time.Time) {
	if w == nil {
		return true, time.Time{}
	}
	var ends []time.Time
	for _, m := range w.Maintenance {
		if !now.Before(m.Start) && now.Before(m.End) {
			ends = append(ends, m.End)
		}
	}
	local := now.In(w.loc)
	midnight := time.Date(local.Year(), local.Month(), local.Day(), 0, 0, 0, 0, w.loc)
	for _, ww := range w.Weekly {
		if !ww.days[local.Weekday()] {
			continue
		}
		start, end := midnight.Add(ww.start), midnight.Add(ww.end)
		if !local.Before(start) && local.Before(end) {
			ends = append(ends, end)
		}
	}
	if len(ends) == 0 {
		return false, time.Time{}
	}
	// Overlapping windows: the session lasts until the last of them closes.
	sort.Slice(ends, func(i, j int) bool { return ends[i].After(ends[j]) })
	return true, ends[0]
}

// Spec is the session the profile opens for id at now, narrowed to scope
// if given. Outside the profile's time windows it fails.
func (p *ProfileConfig) Spec(id Identity, scope []string, now time.Time) (sessions.Spec, error) {
	open, closes := p.Windows.openUntil(now)
	if !open {
		return sessions.Spec{}, errOutsideWindow
	}
	lifetime := p.Lifetime
	if !closes.IsZero() && closes.Sub(now) < lifetime {
		lifetime = closes.Sub(now)
	}
	labels := make([]string, 0, len(p.Labels)+len(id.Labels))
	for k, v := range p.Labels {
		labels = append(labels, k+"="+v)
	}
	for k, v := range id.Labels {
		labels = append(labels, k+"="+v)
	}
	sort.Strings(labels)
	if scope == nil {
		scope = p.Tools
	}
	return sessions.Spec{
		Agent:        id.Agent,
		Profile:      id.Profile,
		Labels:       labels,
		Scope:        scope,
		Lifetime:     lifetime,
		IdleTimeout:  p.IdleTimeout,
		Budget:       p.Budget,
		HistoryLimit: p.History,
	}, nil
}

var errOutsideWindow = errors.New("outside the profile's time windows")

// narrowScope checks a requested scope (space-separated globs) against the
// profile's and returns it. A requested glob is granted when a profile glob
// covers it, reading the request's own wildcards as plain characters:
// "demo__*" covers "demo__sign_*".
func (p *ProfileConfig) narrowScope(requested string) ([]string, error) {
	if strings.TrimSpace(requested) == "" {
		return nil, nil
	}
	var out []string
	for _, want := range strings.Fields(requested) {
		covered := false
		for _, have := range p.Tools {
			if sessions.Match(have, want) {
				covered = true
				break
			}
		}
		if !covered {
			return nil, fmt.Errorf("scope %q is not within the profile's tools", want)
		}
		out = append(out, want)
	}
	return out, nil
}

// labelMap turns a session's "key=value" labels into the map policies see.
func labelMap(labels []string) map[string]string {
	m := make(map[string]string, len(labels))
	for _, l := range labels {
		k, v, _ := strings.Cut(l, "=")
		m[k] = v
	}
	return m
}

// DefaultProfile is the profile of an identity that names none.
const DefaultProfile = "default"

// ValidateProfiles checks every profile, fills identities' default
// profile, and checks that each identity's profile exists.
func ValidateProfiles(profiles map[string]*ProfileConfig, id IdentityConfig) error {
	var errs []error
	for name, p := range profiles {
		if p == nil {
			errs = append(errs, fmt.Errorf("profiles.%s: empty profile", name))
			continue
		}
		if err := p.validate(name); err != nil {
			errs = append(errs, err)
		}
	}
	check := func(where, profile string) {
		if _, ok := profiles[profile]; !ok {
			errs = append(errs, fmt.Errorf("%s: profile %q is not defined under profiles", where, profile))
		}
	}
	for i := range id.APIKeys {
		k := &id.APIKeys[i]
		if k.Agent == "" {
			errs = append(errs, fmt.Errorf("identity.api_keys[%d]: agent is required", i))
		}
		if k.Profile == "" {
			k.Profile = DefaultProfile
		}
		check(fmt.Sprintf("identity.api_keys[%d] (agent %q)", i, k.Agent), k.Profile)
	}
	for i := range id.JWT {
		j := &id.JWT[i]
		if j.Profile == "" && j.ProfileClaim == "" {
			j.Profile = DefaultProfile
		}
		if j.Profile != "" {
			check(fmt.Sprintf("identity.jwt[%d] (issuer %q)", i, j.Issuer), j.Profile)
		}
	}
	return errors.Join(errs...)
}
