package evals

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/toolgate/toolgate/policies"
)

// loadWithShadow loads the policy files under paths as policies.Load does,
// with the rules named in shadow switched to shadow mode: their conditions
// still run and are reported, but they decide nothing. It measures a pack
// without some of its rules (the other trade-off point) on the same files,
// instead of keeping a second copy of the pack.
func loadWithShadow(paths, shadow []string, opts policies.Options) (*policies.Set, error) {
	set, err := policies.Load(paths, opts)
	if err != nil {
		return nil, err
	}
	var unknown []string
	for _, id := range shadow {
		if !slices.ContainsFunc(set.Rules(), func(r policies.Rule) bool { return r.ID == id }) {
			unknown = append(unknown, id)
		}
	}
	if len(unknown) > 0 {
		return nil, fmt.Errorf("shadow: no rule with id %s in %s: name rules of the loaded policies", strings.Join(unknown, ", "), strings.Join(paths, ", "))
	}
	files := make([]policies.SourceFile, 0, len(set.Files()))
	for _, name := range set.Files() {
		data, err := os.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("shadow: read %s: %w", name, err)
		}
		if data, err = shadowRules(data, shadow); err != nil {
			return nil, fmt.Errorf("shadow: %s: %w", name, err)
		}
		files = append(files, policies.SourceFile{Name: name, Data: data})
	}
	out, err := policies.Compile(files, opts)
	if err != nil {
		return nil, fmt.Errorf("shadow: compile: %w", err)
	}
	return out, nil
}

// shadowRules sets mode: shadow on the rules of one policy file whose id is
// in ids, and returns the file re-encoded.
func shadowRules(data []byte, ids []string) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if len(doc.Content) == 0 {
		return data, nil
	}
	rules := mapValue(doc.Content[0], "rules")
	if rules == nil || rules.Kind != yaml.SequenceNode {
		return data, nil
	}
	changed := false
	for _, r := range rules.Content {
		id := mapValue(r, "id")
		if id == nil || !slices.Contains(ids, id.Value) {
			continue
		}
		changed = true
		if m := mapValue(r, "mode"); m != nil {
			m.Value = string(policies.ModeShadow)
			continue
		}
		r.Content = append(r.Content,
			&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "mode"},
			&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: string(policies.ModeShadow)})
	}
	if !changed {
		return data, nil
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	if err := enc.Encode(&doc); err != nil {
		return nil, fmt.Errorf("encode: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode: %w", err)
	}
	return b.Bytes(), nil
}

// mapValue returns the value of key in a YAML mapping node, or nil.
func mapValue(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}
