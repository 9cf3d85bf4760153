package policies

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// File is one policy file.
//
//	rules:
//	  - id: no-secret-then-send
//	    description: A secret read followed by an outbound request.
//	    match: {labels: [external_send]}
//	    when: history.sequence(["*__read_secret"])
//	    action: deny
//	    message: Sending data out after reading a secret is not allowed.
//	    severity: high
type File struct {
	Rules []Rule `yaml:"rules"`
}

// Rule is one policy rule. See the package documentation for each field.
type Rule struct {
	ID          string     `yaml:"id"`
	Description string     `yaml:"description"`
	Match       Match      `yaml:"match"`
	When        Expression `yaml:"when"`
	Action      Action     `yaml:"action"`
	Narrow      Narrowing  `yaml:"narrow"`
	Message     string     `yaml:"message"`
	Mode        Mode       `yaml:"mode"`
	Severity    Severity   `yaml:"severity"`
}

// Match is a rule's cheap pre-filter, checked before its CEL expression.
// Every non-empty list must match; within a list any entry may.
type Match struct {
	Servers []string `yaml:"servers"` // globs on call.server
	Tools   []string `yaml:"tools"`   // globs on call.name or call.tool
	Labels  []string `yaml:"labels"`  // the call has any of these labels
}

func (m Match) matches(c *Call) bool {
	if len(m.Servers) > 0 && !slices.ContainsFunc(m.Servers, func(p string) bool { return Glob(p, c.Server) }) {
		return false
	}
	if len(m.Tools) > 0 && !slices.ContainsFunc(m.Tools, func(p string) bool { return Glob(p, c.Name) || Glob(p, c.Tool) }) {
		return false
	}
	if len(m.Labels) > 0 && !slices.ContainsFunc(m.Labels, func(l string) bool { return slices.Contains(c.Labels, l) }) {
		return false
	}
	return true
}

// Expression is CEL source with the place it starts in its file.
type Expression struct {
	Source string
	Line   int // 1-based line in the file, 0 if unknown
}

// UnmarshalYAML keeps the expression's position for error messages.
func (e *Expression) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || (n.Tag != "!!str" && n.Tag != "") {
		return fmt.Errorf("line %d: when must be a CEL expression written as a string", n.Line)
	}
	e.Source = n.Value
	e.Line = n.Line
	if n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
		e.Line++ // a block scalar starts on the next line
	}
	return nil
}

// Problem is one mistake in a policy or policy test file.
type Problem struct {
	File    string // as given or found under a configured path
	Where   string // for example `rules[3] (id "no-exfil").when`; may be empty
	Pos     string // position inside the expression, for example "line 2 col 5"
	Message string
}

func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	for _, s := range []string{p.Where, p.Pos, p.Message} {
		if s != "" {
			b.WriteString(": ")
			b.WriteString(s)
		}
	}
	return b.String()
}

// LoadError lists every problem found in a policy set. A set with any
// problem does not load.
type LoadError struct {
	Problems []Problem
}

func (e *LoadError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// source is the content of one policy file.
type source struct {
	path string
	data []byte
}

// isTestFile reports whether a file holds policy tests rather than rules.
func isTestFile(name string) bool {
	return strings.HasSuffix(name, "_test.yaml") || strings.HasSuffix(name, "_test.yml")
}

func isYAML(name string) bool {
	return strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")
}

// findFiles expands paths (files or folders, searched recursively for
// .yaml and .yml files) into a sorted list of files. want selects policy
// or test files; a file named explicitly is taken as given.
func findFiles(paths []string, tests bool) ([]string, error) {
	var out []string
	for _, p := range paths {
		info, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("find policy files: %w", err)
		}
		if !info.IsDir() {
			if isTestFile(p) == tests {
				out = append(out, p)
			}
			continue
		}
		err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() || !isYAML(d.Name()) || isTestFile(d.Name()) != tests {
				return nil
			}
			out = append(out, path)
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("find policy files in %s: %w", p, err)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

func readSources(paths []string) ([]source, error) {
	files, err := findFiles(paths, false)
	if err != nil {
		return nil, err
	}
	srcs := make([]source, 0, len(files))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read policy file: %w", err)
		}
		srcs = append(srcs, source{path: f, data: data})
	}
	return srcs, nil
}

// decodeStrict decodes one YAML document into v, refusing unknown and
// duplicate keys and trailing documents.
func decodeStrict(data []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // an empty file holds nothing
		}
		return errors.New(friendlyYAML(err.Error()))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return errors.New("more than one YAML document: keep one document per file")
	}
	return nil
}

var yamlTypeNames = strings.NewReplacer(
	"yaml: unmarshal errors:\n  ", "",
	"\n  ", "; ",
	"in type policies.File", "at the top level (want rules)",
	"in type policies.Rule", "in a rule (want id, description, match, when, action, narrow, message, mode, severity)",
	"in type policies.Match", "in match (want servers, tools, labels)",
	"in type policies.Narrowing", "in narrow (want tools, labels)",
	"in type policies.testFile", "at the top level (want tools, cases)",
	"in type policies.testCase", "in a case (want name, session, calls)",
	"in type policies.testSession", "in session",
	"in type policies.testCall", "in a call",
)

func friendlyYAML(msg string) string { return yamlTypeNames.Replace(msg) }

// ruleWhere names a rule in a problem: rules[3] (id "no-exfil").
func ruleWhere(i int, id string) string {
	if id == "" {
		return fmt.Sprintf("rules[%d]", i)
	}
	return fmt.Sprintf("rules[%d] (id %q)", i, id)
}

// Validate checks a rule on its own, apart from its expression. Messages
// say how to fix the rule.
func (r *Rule) Validate() error {
	var errs []error
	if r.ID == "" {
		errs = append(errs, errors.New("id is missing: give every rule a unique id"))
	} else if strings.ContainsAny(r.ID, " \t\n\"'") {
		errs = append(errs, fmt.Errorf("id %q has spaces or quotes: use letters, digits, '-', '_' or '.'", r.ID))
	}
	if !r.Action.Valid() {
		errs = append(errs, fmt.Errorf("action %q is not one of allow, deny, require_approval, narrow, revoke", r.Action))
	}
	if r.Action == ActionNarrow && r.Narrow.Empty() {
		errs = append(errs, errors.New("action narrow needs narrow.tools or narrow.labels to remove from the scope"))
	}
	if r.Action != ActionNarrow && !r.Narrow.Empty() {
		errs = append(errs, fmt.Errorf("narrow is set but action is %q: remove narrow or use action narrow", r.Action))
	}
	if r.Action != ActionAllow && r.Action.Valid() && strings.TrimSpace(r.Message) == "" {
		errs = append(errs, errors.New("message is missing: say what the agent is told when this rule applies"))
	}
	if r.Mode != "" && r.Mode != ModeEnforce && r.Mode != ModeShadow {
		errs = append(errs, fmt.Errorf("mode %q is not enforce or shadow", r.Mode))
	}
	if r.Severity != "" && !r.Severity.valid() {
		errs = append(errs, fmt.Errorf("severity %q is not one of low, medium, high, critical", r.Severity))
	}
	for _, list := range [][]string{r.Match.Servers, r.Match.Tools, r.Narrow.Tools} {
		for _, g := range list {
			if err := validGlob(g); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, list := range [][]string{r.Match.Labels, r.Narrow.Labels} {
		for _, l := range list {
			if l == "" {
				errs = append(errs, errors.New("empty label: remove it"))
			}
		}
	}
	return errors.Join(errs...)
}
