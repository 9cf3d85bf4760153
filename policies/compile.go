package policies

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/types"
)

// Cost defaults, in CEL cost units. One unit is roughly one CEL operation:
// on a 2-core machine a unit costs 5-20 ns, so the per-expression limit is
// about 0.5-2 ms and the per-decision budget about 5-20 ms.
const (
	DefaultCostLimit  = 100_000
	DefaultCallBudget = 1_000_000
)

// Options tune compilation and evaluation of a policy set.
type Options struct {
	// CostLimit caps the runtime cost of one expression; going over it
	// stops that expression and denies the call. Zero means
	// DefaultCostLimit.
	CostLimit uint64
	// CallBudget caps the total cost of all expressions for one decision;
	// going over it stops evaluation and denies the call. Zero means
	// DefaultCallBudget.
	CallBudget uint64
}

func (o Options) withDefaults() Options {
	if o.CostLimit == 0 {
		o.CostLimit = DefaultCostLimit
	}
	if o.CallBudget == 0 {
		o.CallBudget = DefaultCallBudget
	}
	return o
}

// SourceFile is the content of one policy file.
type SourceFile struct {
	Name string // shown in errors, normally the path
	Data []byte
}

// Set is a compiled, immutable policy set. It is safe for concurrent use.
// Its only state is what it remembers of sessions' history scans
// (scanmemo.go) and bounds (bounds.go), which changes no decision.
type Set struct {
	rules  []*compiledRule
	nSlots int // shared comprehensions of the untracked programs (memo.go)
	// scans remembers history scans and bounds across decisions
	// (scanmemo.go, bounds.go).
	scans   *scanMemory
	version string
	files   []string
	opts    Options
	adapter types.Adapter
}

type compiledRule struct {
	Rule
	file  string
	index int
	prg   cel.Program // nil when the rule has no when: always true
	// fast is prg without cost tracking, set when the rule's cost is at
	// most bound (within its limit) for every input within the sizes of
	// bounds.go; nil otherwise.
	fast  cel.Program
	bound uint64
}

// Version is a hash of the files the set was compiled from.
func (s *Set) Version() string { return s.version }

// Files lists the policy files of the set, in evaluation order.
func (s *Set) Files() []string { return s.files }

// Rules returns a copy of the set's rules, in evaluation order.
func (s *Set) Rules() []Rule {
	out := make([]Rule, len(s.rules))
	for i, r := range s.rules {
		out[i] = r.Rule
	}
	return out
}

// Load reads the policy files under paths (files, or folders searched
// recursively for *.yaml and *.yml, leaving out *_test.yaml) and compiles
// them into a Set. A *LoadError lists every problem found.
func Load(paths []string, opts Options) (*Set, error) {
	srcs, err := readSources(paths)
	if err != nil {
		return nil, fmt.Errorf("load policies: %w", err)
	}
	files := make([]SourceFile, len(srcs))
	for i, s := range srcs {
		files[i] = SourceFile{Name: s.path, Data: s.data}
	}
	set, err := Compile(files, opts)
	if err != nil {
		return nil, fmt.Errorf("load policies: %w", err)
	}
	return set, nil
}

// Check loads and compiles the policies under paths and reports every
// problem, without keeping the result.
func Check(paths []string) error {
	_, err := Load(paths, Options{})
	return err
}

// hashSources identifies a set of files by content.
func hashSources(files []SourceFile) string {
	h := sha256.New()
	for _, f := range files {
		fmt.Fprintf(h, "%d:%s%d:", len(f.Name), f.Name, len(f.Data))
		h.Write(f.Data)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// Compile decodes, validates and compiles policy files, in the order
// given. Rules are evaluated in that order. On any problem it returns a
// *LoadError listing all of them.
func Compile(files []SourceFile, opts Options) (*Set, error) {
	opts = opts.withDefaults()
	fn := &functions{}
	env, err := newCELEnv(fn)
	if err != nil {
		return nil, err
	}
	env, err = env.Extend(cel.ASTValidators(
		cel.ValidateDurationLiterals(),
		cel.ValidateTimestampLiterals(),
		cel.ValidateRegexLiterals(),
		literalValidator{fn: fn},
	))
	if err != nil {
		return nil, fmt.Errorf("build CEL environment: %w", err)
	}
	limit := min(opts.CostLimit, opts.CallBudget)
	progOpts := []cel.ProgramOption{
		cel.EvalOptions(cel.OptOptimize),
		cel.CostLimit(limit),
		cel.CostTrackerOptions(costTrackers()...),
	}

	set := &Set{version: hashSources(files), opts: opts, adapter: env.CELTypeAdapter()}
	var problems []Problem
	seen := map[string]string{} // rule id -> where it was first defined
	memo := &memoSlots{byKey: map[string]int{}, scans: map[string]int{}}
	for _, f := range files {
		set.files = append(set.files, f.Name)
		var pf File
		if err := decodeStrict(f.Data, &pf); err != nil {
			problems = append(problems, Problem{File: f.Name, Message: err.Error()})
			continue
		}
		for i := range pf.Rules {
			r := &pf.Rules[i]
			where := ruleWhere(i, r.ID)
			if err := r.Validate(); err != nil {
				for _, e := range splitJoined(err) {
					problems = append(problems, Problem{File: f.Name, Where: where, Message: e})
				}
			}
			if r.ID != "" {
				if first, dup := seen[r.ID]; dup {
					problems = append(problems, Problem{File: f.Name, Where: where,
						Message: fmt.Sprintf("id %q is already used by %s: rule ids must be unique across the set", r.ID, first)})
				} else {
					seen[r.ID] = f.Name + ": " + ruleWhere(i, "")
				}
			}
			if r.Mode == "" {
				r.Mode = ModeEnforce
			}
			if r.Severity == "" {
				r.Severity = SeverityMedium
			}
			cr := &compiledRule{Rule: *r, file: f.Name, index: i}
			if strings.TrimSpace(r.When.Source) != "" {
				prg, checked, probs := compileWhen(env, r.When, progOpts)
				for _, p := range probs {
					p.File, p.Where = f.Name, where+".when"
					problems = append(problems, p)
				}
				cr.prg = prg
				if prg != nil {
					cr.fast, cr.bound = boundedProgram(env, checked, limit, memo)
				}
			}
			set.rules = append(set.rules, cr)
		}
	}
	if len(problems) > 0 {
		return nil, &LoadError{Problems: problems}
	}
	set.nSlots = len(memo.byKey)
	set.scans = newScanMemory(len(memo.scans))
	return set, nil
}

func splitJoined(err error) []string {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []string
		for _, e := range j.Unwrap() {
			out = append(out, e.Error())
		}
		return out
	}
	return []string{err.Error()}
}

// compileWhen compiles one expression and checks that it yields a bool.
func compileWhen(env *cel.Env, e Expression, progOpts []cel.ProgramOption) (cel.Program, *cel.Ast, []Problem) {
	checked, iss := env.Compile(e.Source)
	if iss.Err() != nil {
		var probs []Problem
		for _, ce := range iss.Errors() {
			p := Problem{Message: ce.Message}
			if loc := ce.Location; loc != nil && loc.Line() > 0 {
				p.Pos = fmt.Sprintf("line %d col %d", loc.Line(), loc.Column()+1)
			}
			probs = append(probs, p)
		}
		return nil, nil, probs
	}
	if !checked.OutputType().IsExactType(types.BoolType) {
		return nil, nil, []Problem{{Message: fmt.Sprintf("must be a bool expression, but it gives %s", checked.OutputType())}}
	}
	// Problems are all reported above, on the source as written; only a
	// valid expression is reordered (order.go).
	checked = reorderLogic(env, checked)
	prg, err := env.Program(checked, progOpts...)
	if err != nil {
		return nil, nil, []Problem{{Message: fmt.Sprintf("build program: %v", err)}}
	}
	return prg, checked, nil
}

// boundedProgram builds an untracked program for checked when its
// estimated cost, for inputs within the sizes of bounds.go, is at most
// limit; it returns nil otherwise (or if anything fails: the tracked
// program then serves every input). The program shares comprehensions
// through memo.
func boundedProgram(env *cel.Env, checked *cel.Ast, limit uint64, memo *memoSlots) (cel.Program, uint64) {
	est, err := env.EstimateCost(checked, sizeHints{})
	if err != nil || est.Max > limit {
		return nil, 0
	}
	opts := []cel.ProgramOption{cel.EvalOptions(cel.OptOptimize)}
	if dec := memo.decorator(checked); dec != nil {
		opts = append(opts, dec)
	}
	prg, err := env.Program(checked, opts...)
	if err != nil {
		return nil, 0
	}
	return prg, est.Max
}

// literalValidator rejects at load time constant arguments that would fail
// at every evaluation: bad time windows, bad CIDRs, empty globs.
type literalValidator struct{ fn *functions }

func (literalValidator) Name() string { return "toolgate.literals" }

func (v literalValidator) Validate(_ *cel.Env, _ cel.ValidatorConfig, a *ast.AST, iss *cel.Issues) {
	root := ast.NavigateAST(a)
	lit := func(e ast.Expr) (string, bool) {
		if e.Kind() != ast.LiteralKind {
			return "", false
		}
		s, ok := e.AsLiteral().Value().(string)
		return s, ok
	}
	for _, c := range ast.MatchDescendants(root, ast.FunctionMatcher("in_window")) {
		args := c.AsCall().Args()
		if len(args) != 5 {
			continue
		}
		var s [4]string
		all := true
		for i := range s {
			var ok bool
			if s[i], ok = lit(args[i+1]); !ok {
				all = false
			}
		}
		if all {
			if _, err := v.fn.parseWindow(s[0], s[1], s[2], s[3]); err != nil {
				iss.ReportErrorAtID(c.ID(), "in_window: %v", err)
			}
		}
	}
	for _, c := range ast.MatchDescendants(root, ast.FunctionMatcher("ip_in_cidr")) {
		args := c.AsCall().Args()
		if len(args) == 2 {
			if s, ok := lit(args[1]); ok {
				if _, err := netip.ParsePrefix(s); err != nil {
					iss.ReportErrorAtID(args[1].ID(), "ip_in_cidr: %q is not a CIDR such as \"10.0.0.0/8\"", s)
				}
			}
		}
	}
	for _, c := range ast.MatchDescendants(root, ast.FunctionMatcher("glob")) {
		call := c.AsCall()
		pat := call.Target()
		if !call.IsMemberFunction() && len(call.Args()) == 2 {
			pat = call.Args()[0]
		}
		if s, ok := lit(pat); ok {
			if err := validGlob(s); err != nil {
				iss.ReportErrorAtID(pat.ID(), "glob: %v", err)
			}
		}
	}
}

var errNoNow = errors.New("input has no time: set Input.Now")
