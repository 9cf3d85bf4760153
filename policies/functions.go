package policies

import (
	"fmt"
	"net/mail"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"
	"github.com/google/cel-go/interpreter"
)

// functions holds the CEL functions of the policy environment and the
// caches they share. One value serves one compiled Set; the caches only
// hold immutable values, so concurrent decisions may share them.
type functions struct {
	zones sync.Map // zone name -> *time.Location
}

// Overload IDs whose runtime cost grows with the history list.
const (
	ovSequence        = "toolgate_history_sequence_list"
	ovCountSinceDur   = "toolgate_history_countSince_duration_string"
	ovCountSinceDurD  = "toolgate_history_countSince_duration_string_string"
	ovCountSinceTime  = "toolgate_history_countSince_timestamp_string"
	ovCountSinceTimeD = "toolgate_history_countSince_timestamp_string_string"
)

func (fn *functions) envOptions() []cel.EnvOption {
	S, B, I := types.StringType, types.BoolType, types.IntType
	return []cel.EnvOption{
		cel.Function("glob",
			cel.Overload("toolgate_glob_string_string", []*types.Type{S, S}, B,
				cel.BinaryBinding(func(p, s ref.Val) ref.Val { return globVal(p, s) })),
			cel.MemberOverload("toolgate_string_glob_string", []*types.Type{S, S}, B,
				cel.BinaryBinding(func(p, s ref.Val) ref.Val { return globVal(p, s) }))),
		cel.Function("sequence",
			cel.MemberOverload(ovSequence, []*types.Type{historyListType, stringListType}, B,
				cel.BinaryBinding(sequence))),
		cel.Function("countSince",
			cel.MemberOverload(ovCountSinceDur, []*types.Type{historyListType, types.DurationType, S}, I,
				cel.FunctionBinding(countSince)),
			cel.MemberOverload(ovCountSinceDurD, []*types.Type{historyListType, types.DurationType, S, S}, I,
				cel.FunctionBinding(countSince)),
			cel.MemberOverload(ovCountSinceTime, []*types.Type{historyListType, types.TimestampType, S}, I,
				cel.FunctionBinding(countSince)),
			cel.MemberOverload(ovCountSinceTimeD, []*types.Type{historyListType, types.TimestampType, S, S}, I,
				cel.FunctionBinding(countSince))),
		cel.Function("url_host",
			cel.Overload("toolgate_url_host_string", []*types.Type{S}, S,
				cel.UnaryBinding(func(v ref.Val) ref.Val { return types.String(URLHost(string(v.(types.String)))) }))),
		cel.Function("email_domain",
			cel.Overload("toolgate_email_domain_string", []*types.Type{S}, S,
				cel.UnaryBinding(func(v ref.Val) ref.Val { return types.String(EmailDomain(string(v.(types.String)))) }))),
		cel.Function("ip_in_cidr",
			cel.Overload("toolgate_ip_in_cidr_string_string", []*types.Type{S, S}, B,
				cel.BinaryBinding(ipInCIDR))),
		cel.Function("is_private_ip",
			cel.Overload("toolgate_is_private_ip_string", []*types.Type{S}, B,
				cel.UnaryBinding(func(v ref.Val) ref.Val { return types.Bool(IsPrivateIP(string(v.(types.String)))) }))),
		cel.Function("in_window",
			cel.Overload("toolgate_in_window", []*types.Type{types.TimestampType, S, S, S, S}, B,
				cel.FunctionBinding(fn.inWindow))),
	}
}

// costTrackers charge history functions one unit per entry they scan, so
// the cost limit bounds them like the comprehensions they replace.
func costTrackers() []interpreter.CostTrackerOption {
	perEntry := func(args []ref.Val, _ ref.Val) *uint64 {
		n := uint64(1)
		if l, ok := args[0].(traits.Sizer); ok {
			if sz, ok := l.Size().(types.Int); ok {
				n += uint64(sz)
			}
		}
		return &n
	}
	var out []interpreter.CostTrackerOption
	for _, id := range []string{ovSequence, ovCountSinceDur, ovCountSinceDurD, ovCountSinceTime, ovCountSinceTimeD} {
		out = append(out, interpreter.OverloadCostTracker(id, perEntry))
	}
	return out
}

func globVal(p, s ref.Val) ref.Val {
	return types.Bool(Glob(string(p.(types.String)), string(s.(types.String))))
}

// eachEntry calls f on the history entries of a list, oldest first, until
// f returns false: directly for the history variable, element by element
// for a derived list (for example history.filter(...)). It returns the
// evaluation state, nil for an empty derived list.
func eachEntry(list ref.Val, f func(*HistoryEntry, *evalState) bool) (*evalState, error) {
	if hl, ok := list.(historyList); ok {
		for i := range hl.st.in.History {
			if !f(&hl.st.in.History[i], hl.st) {
				break
			}
		}
		return hl.st, nil
	}
	l := list.(traits.Lister)
	n := int(l.Size().(types.Int))
	var st *evalState
	for i := range n {
		h, s, err := historyOf(l.Get(types.Int(i)))
		if err != nil {
			return nil, err
		}
		st = s
		if !f(h, s) {
			break
		}
	}
	return st, nil
}

// sequence reports whether history holds calls whose names match the
// globs in order, not necessarily adjacent.
func sequence(list, patterns ref.Val) ref.Val {
	ps := patterns.(traits.Lister)
	np := int(ps.Size().(types.Int))
	if np == 0 {
		return types.True
	}
	hl, whole := list.(historyList)
	if whole {
		if v := hl.st.recallSequence(ps, np); v != nil {
			return v
		}
	}
	globs := make([]glob, np)
	for i := range np {
		s, ok := ps.Get(types.Int(i)).(types.String)
		if !ok {
			return types.NewErr("sequence: pattern %d is not a string", i)
		}
		globs[i] = compileGlob(string(s))
	}
	next := 0
	if whole {
		// The history itself: read its entries without a call per entry.
		hist, g := hl.st.in.History, &globs[0]
		for i := range hist {
			if g.match(hist[i].Name) {
				if next++; next == np {
					break
				}
				g = &globs[next]
			}
		}
		v := types.Bool(next == np)
		hl.st.remember(histCall{globs: globs, val: v})
		return v
	}
	_, err := eachEntry(list, func(h *HistoryEntry, _ *evalState) bool {
		if globs[next].match(h.Name) {
			next++
		}
		return next < np
	})
	if err != nil {
		return types.NewErr("sequence: %v", err)
	}
	return types.Bool(next == np)
}

// countSince counts history entries at or after a time (or within a
// duration before now) whose name matches a glob and, optionally, whose
// decision equals the fourth argument.
func countSince(args ...ref.Val) ref.Val {
	pattern := string(args[2].(types.String))
	decision := ""
	if len(args) == 4 {
		decision = string(args[3].(types.String))
	}
	var since time.Time
	var window time.Duration
	switch t := args[1].(type) {
	case types.Timestamp:
		since = t.Time
	case types.Duration:
		window = t.Duration
	default:
		return types.NewErr("countSince: want a duration or a timestamp, got %s", args[1].Type().TypeName())
	}
	g := compileGlob(pattern)
	// Cheapest test first: most entries differ in decision or name.
	match := func(h *HistoryEntry) bool {
		return (decision == "" || h.Decision == decision) && g.match(h.Name) && !h.Time.Before(since)
	}
	if hl, ok := args[0].(historyList); ok {
		st := hl.st
		if since.IsZero() {
			since = st.in.Now.Add(-window)
		}
		key := histCall{count: true, since: since, pattern: pattern, decision: decision}
		if v := st.recall(&key); v != nil {
			return v
		}
		count := 0
		hist := st.in.History
		for i := range hist {
			// match, written out: one call per entry costs as much as
			// the test.
			h := &hist[i]
			if (decision == "" || h.Decision == decision) && g.match(h.Name) && !h.Time.Before(since) {
				count++
			}
		}
		key.val = types.Int(count)
		st.remember(key)
		return key.val
	}
	count := 0
	_, err := eachEntry(args[0], func(h *HistoryEntry, st *evalState) bool {
		if since.IsZero() {
			since = st.in.Now.Add(-window)
		}
		if match(h) {
			count++
		}
		return true
	})
	if err != nil {
		return types.NewErr("countSince: %v", err)
	}
	return types.Int(count)
}

func ipInCIDR(ipv, cidrv ref.Val) ref.Val {
	prefix, err := netip.ParsePrefix(string(cidrv.(types.String)))
	if err != nil {
		return types.NewErr("ip_in_cidr: %v", err)
	}
	ip, err := netip.ParseAddr(string(ipv.(types.String)))
	if err != nil {
		return types.False
	}
	return types.Bool(prefix.Contains(ip.Unmap()))
}

// URLHost returns the lower-case host of a URL without its port, or "" if
// s has none. A URL without a scheme ("example.com/x") is read as
// "//example.com/x".
func URLHost(s string) string {
	u, err := url.Parse(strings.TrimSpace(s))
	if err == nil && u.Host == "" && !strings.Contains(s, "://") {
		u, err = url.Parse("//" + strings.TrimSpace(s))
	}
	if err != nil {
		return ""
	}
	return strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
}

// EmailDomain returns the lower-case domain of an e-mail address ("Ann
// <ann@Example.com>" gives "example.com"), or "" if s is not one.
func EmailDomain(s string) string {
	addr := strings.TrimSpace(s)
	if a, err := mail.ParseAddress(addr); err == nil {
		addr = a.Address
	}
	at := strings.LastIndexByte(addr, '@')
	if at < 0 || at == len(addr)-1 {
		return ""
	}
	return strings.ToLower(addr[at+1:])
}

// IsPrivateIP reports whether s is an IP address that does not route on
// the public internet: private (RFC 1918, RFC 4193), loopback, link-local
// or unspecified; "localhost" counts too. Anything else, including host
// names, is false.
func IsPrivateIP(s string) bool {
	s = strings.Trim(strings.TrimSpace(s), "[]")
	if strings.EqualFold(s, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return false
	}
	ip = ip.Unmap()
	return ip.IsPrivate() || ip.IsLoopback() || ip.IsLinkLocalUnicast() ||
		ip.IsLinkLocalMulticast() || ip.IsUnspecified()
}

func (fn *functions) inWindow(args ...ref.Val) ref.Val {
	t, ok := args[0].(types.Timestamp)
	if !ok {
		return types.NewErr("in_window: want a timestamp")
	}
	w, err := fn.parseWindow(string(args[1].(types.String)), string(args[2].(types.String)),
		string(args[3].(types.String)), string(args[4].(types.String)))
	if err != nil {
		return types.NewErr("in_window: %v", err)
	}
	return types.Bool(w.contains(t.Time))
}

// window is a weekly time window in one zone.
type window struct {
	loc      *time.Location
	days     [7]bool // by time.Weekday
	from, to int     // minutes after midnight; to <= from wraps past midnight
}

// contains reports whether t falls in w. A window that wraps midnight
// belongs to the day it starts on.
func (w window) contains(t time.Time) bool {
	lt := t.In(w.loc)
	m := lt.Hour()*60 + lt.Minute()
	if w.from < w.to {
		return w.days[lt.Weekday()] && m >= w.from && m < w.to
	}
	if m >= w.from {
		return w.days[lt.Weekday()]
	}
	return m < w.to && w.days[(lt.Weekday()+6)%7]
}

var weekdays = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
}

func (fn *functions) parseWindow(zone, days, from, to string) (window, error) {
	var w window
	if l, ok := fn.zones.Load(zone); ok {
		w.loc = l.(*time.Location)
	} else {
		l, err := time.LoadLocation(zone)
		if err != nil {
			return w, fmt.Errorf("unknown time zone %q: use an IANA name such as \"Europe/Berlin\" or \"UTC\"", zone)
		}
		fn.zones.Store(zone, l)
		w.loc = l
	}
	if err := parseDays(days, &w.days); err != nil {
		return w, err
	}
	var err error
	if w.from, err = parseClock(from); err != nil {
		return w, err
	}
	if w.to, err = parseClock(to); err != nil {
		return w, err
	}
	return w, nil
}

// parseDays reads "Mon-Fri", "Sat,Sun", "Mon-Wed,Fri" or "*".
func parseDays(s string, days *[7]bool) error {
	if strings.TrimSpace(s) == "*" {
		for i := range days {
			days[i] = true
		}
		return nil
	}
	for part := range strings.SplitSeq(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, ok := weekdays[strings.ToLower(strings.TrimSpace(lo))]
		if !ok {
			return fmt.Errorf("bad day %q in %q: use Mon, Tue, Wed, Thu, Fri, Sat, Sun, ranges like Mon-Fri, or *", lo, s)
		}
		b := a
		if isRange {
			if b, ok = weekdays[strings.ToLower(strings.TrimSpace(hi))]; !ok {
				return fmt.Errorf("bad day %q in %q: use Mon, Tue, Wed, Thu, Fri, Sat, Sun, ranges like Mon-Fri, or *", hi, s)
			}
		}
		for d := a; ; d = (d + 1) % 7 {
			days[d] = true
			if d == b {
				break
			}
		}
	}
	return nil
}

func parseClock(s string) (int, error) {
	t, err := time.Parse("15:04", strings.TrimSpace(s))
	if err != nil {
		if strings.TrimSpace(s) == "24:00" {
			return 24 * 60, nil
		}
		return 0, fmt.Errorf("bad time of day %q: use 24-hour HH:MM such as \"09:00\"", s)
	}
	return t.Hour()*60 + t.Minute(), nil
}
