package tools

import (
	"encoding/json"
	"fmt"
	"path"
	"slices"

	"github.com/mark3labs/mcp-go/mcp"
)

// Tool is one upstream tool as agents see it, under its namespaced name.
type Tool struct {
	Name     string          // namespaced: server + separator + upstream name
	Server   string          // the server's name in config
	Upstream string          // the upstream's own tool name
	Raw      json.RawMessage // the upstream's tool object, verbatim, as listed
	Labels   []string        // from config (server labels + matching tool_labels), sorted, unique
}

// MCP returns the tool as an mcp.Tool for mcp-go's server: the name is the
// namespaced one and the input and output schemas are the upstream's raw
// JSON, so no schema keyword is lost on the way (mcp.Tool would drop
// `$schema`, `oneOf` and a top-level `description`).
func (t Tool) MCP() (mcp.Tool, error) {
	var out mcp.Tool
	if err := json.Unmarshal(t.Raw, &out); err != nil {
		return mcp.Tool{}, fmt.Errorf("tool %q: decode upstream tool: %w", t.Name, err)
	}
	var schemas struct {
		Input  json.RawMessage `json:"inputSchema"`
		Output json.RawMessage `json:"outputSchema"`
	}
	if err := json.Unmarshal(t.Raw, &schemas); err != nil {
		return mcp.Tool{}, fmt.Errorf("tool %q: decode upstream schemas: %w", t.Name, err)
	}
	out.Name = t.Name
	out.InputSchema = mcp.ToolInputSchema{}
	out.OutputSchema = mcp.ToolOutputSchema{}
	out.RawInputSchema = nil
	out.RawOutputSchema = nil
	if len(schemas.Input) > 0 && string(schemas.Input) != "null" {
		out.RawInputSchema = schemas.Input
	} else {
		// inputSchema is required by MCP; an upstream that omits it takes no arguments.
		out.RawInputSchema = json.RawMessage(`{"type":"object"}`)
	}
	if len(schemas.Output) > 0 && string(schemas.Output) != "null" {
		out.RawOutputSchema = schemas.Output
	}
	return out, nil
}

// Resource is one upstream resource; its URI is the upstream's, its name is namespaced.
type Resource struct {
	Name     string // namespaced
	Server   string
	Upstream string // the upstream's own resource name
	URI      string
	Raw      json.RawMessage // the upstream's resource object, verbatim
}

// MCP returns the resource for mcp-go's server, with the namespaced name.
func (r Resource) MCP() (mcp.Resource, error) {
	var out mcp.Resource
	if err := json.Unmarshal(r.Raw, &out); err != nil {
		return mcp.Resource{}, fmt.Errorf("resource %q: decode upstream resource: %w", r.Name, err)
	}
	out.Name = r.Name
	return out, nil
}

// ResourceTemplate is one upstream resource template, name namespaced.
type ResourceTemplate struct {
	Name        string // namespaced
	Server      string
	Upstream    string
	URITemplate string
	Raw         json.RawMessage

	template *mcp.URITemplate // parsed, for matching URIs in ReadResource
}

// MCP returns the template for mcp-go's server, with the namespaced name.
func (r ResourceTemplate) MCP() (mcp.ResourceTemplate, error) {
	var out mcp.ResourceTemplate
	if err := json.Unmarshal(r.Raw, &out); err != nil {
		return mcp.ResourceTemplate{}, fmt.Errorf("resource template %q: decode upstream template: %w", r.Name, err)
	}
	out.Name = r.Name
	return out, nil
}

// matches reports whether uri is an expansion of the template.
func (r ResourceTemplate) matches(uri string) bool {
	return r.template != nil && r.template.Template != nil && r.template.Match(uri) != nil
}

// Prompt is one upstream prompt, name namespaced.
type Prompt struct {
	Name     string // namespaced
	Server   string
	Upstream string
	Raw      json.RawMessage
}

// MCP returns the prompt for mcp-go's server, with the namespaced name.
func (p Prompt) MCP() (mcp.Prompt, error) {
	var out mcp.Prompt
	if err := json.Unmarshal(p.Raw, &out); err != nil {
		return mcp.Prompt{}, fmt.Errorf("prompt %q: decode upstream prompt: %w", p.Name, err)
	}
	out.Name = p.Name
	return out, nil
}

// labelsFor returns the labels config gives an upstream tool: the server's
// labels plus those of every tool_labels glob the name matches, sorted, unique.
func labelsFor(cfg ServerConfig, upstreamName string) []string {
	labels := slices.Clone(cfg.Labels)
	for pattern, ls := range cfg.ToolLabels {
		if ok, _ := path.Match(pattern, upstreamName); ok {
			labels = append(labels, ls...)
		}
	}
	slices.Sort(labels)
	return slices.Compact(labels)
}

// listing is what one upstream offers, as last listed.
type listing struct {
	tools     []Tool
	resources []Resource
	templates []ResourceTemplate
	prompts   []Prompt
	problems  []string // entries left out, with the reason
}

// catalog is the merged view over every ready upstream; immutable once built.
type catalog struct {
	tools     []Tool
	byName    map[string]Tool
	resources []Resource
	templates []ResourceTemplate
	prompts   []Prompt
	prompt    map[string]Prompt
	problems  []string
}

// equal reports whether two catalogs offer the same things to agents.
func (c *catalog) equal(o *catalog) bool {
	return slices.EqualFunc(c.tools, o.tools, func(a, b Tool) bool {
		return a.Name == b.Name && string(a.Raw) == string(b.Raw) && slices.Equal(a.Labels, b.Labels)
	}) &&
		slices.EqualFunc(c.resources, o.resources, func(a, b Resource) bool {
			return a.Name == b.Name && string(a.Raw) == string(b.Raw)
		}) &&
		slices.EqualFunc(c.templates, o.templates, func(a, b ResourceTemplate) bool {
			return a.Name == b.Name && string(a.Raw) == string(b.Raw)
		}) &&
		slices.EqualFunc(c.prompts, o.prompts, func(a, b Prompt) bool {
			return a.Name == b.Name && string(a.Raw) == string(b.Raw)
		})
}

// mergeCatalog merges listings in config order; a name already taken by an
// earlier server is left out and reported.
func mergeCatalog(ls []*listing) *catalog {
	c := &catalog{byName: map[string]Tool{}, prompt: map[string]Prompt{}}
	for _, l := range ls {
		if l == nil {
			continue
		}
		c.problems = append(c.problems, l.problems...)
		for _, t := range l.tools {
			if prev, dup := c.byName[t.Name]; dup {
				c.problems = append(c.problems, fmt.Sprintf("server %q tool %q: name %q collides with tool %q of server %q; left out",
					t.Server, t.Upstream, t.Name, prev.Upstream, prev.Server))
				continue
			}
			c.byName[t.Name] = t
			c.tools = append(c.tools, t)
		}
		for _, p := range l.prompts {
			if prev, dup := c.prompt[p.Name]; dup {
				c.problems = append(c.problems, fmt.Sprintf("server %q prompt %q: name %q collides with prompt %q of server %q; left out",
					p.Server, p.Upstream, p.Name, prev.Upstream, prev.Server))
				continue
			}
			c.prompt[p.Name] = p
			c.prompts = append(c.prompts, p)
		}
		c.resources = append(c.resources, l.resources...)
		c.templates = append(c.templates, l.templates...)
	}
	slices.SortFunc(c.tools, func(a, b Tool) int { return cmpString(a.Name, b.Name) })
	slices.SortFunc(c.prompts, func(a, b Prompt) int { return cmpString(a.Name, b.Name) })
	slices.SortStableFunc(c.resources, func(a, b Resource) int { return cmpString(a.Name, b.Name) })
	slices.SortStableFunc(c.templates, func(a, b ResourceTemplate) int { return cmpString(a.Name, b.Name) })
	return c
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// LabelsFor returns the labels cfg gives the upstream tool upstreamName, as
// the catalog computes them: for replaying recorded calls without a live
// upstream.
func LabelsFor(cfg ServerConfig, upstreamName string) []string {
	return labelsFor(cfg, upstreamName)
}
