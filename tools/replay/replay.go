// Package replay is an MCP tool server that answers tool calls with results
// recorded earlier, so recorded agent sessions can be driven through a real
// gateway end to end.
package replay

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// Call is one recorded tool call: its arguments and what the tool returned.
type Call struct {
	Tool string
	Args json.RawMessage
	// Result is the recorded output as text.
	Result string
	// Error, when set, is the recorded tool error; it is returned as an
	// isError result.
	Error string
}

// Result is the tool result a recorded call is replayed as: the error text
// as an isError result when the call failed, else the result text. Direct
// replay feeds the same value to the detectors as the server returns, so
// both modes see the same text.
func Result(c Call) *mcp.CallToolResult {
	if c.Error != "" {
		return mcp.NewToolResultError(c.Error)
	}
	return mcp.NewToolResultText(c.Result)
}

// Server serves the tools of one recorded tool server. Load sets the calls
// of the session being replayed; each tools/call is answered with the first
// loaded call of that tool not yet used, preferring one with the same
// arguments, so calls that a gateway refused do not shift the answers of
// later ones.
type Server struct {
	mcp *server.MCPServer

	mu      sync.Mutex
	pending []Call
	used    []bool
}

// New returns a server named name listing the given tools, each accepting
// any object of arguments.
func New(name string, tools []string) *Server {
	s := &Server{mcp: server.NewMCPServer(name, "replay", server.WithToolCapabilities(false))}
	names := append([]string(nil), tools...)
	sort.Strings(names)
	for _, t := range names {
		tool := mcp.NewToolWithRawSchema(t, "Replays recorded results of "+t+".",
			json.RawMessage(`{"type":"object","additionalProperties":true}`))
		s.mcp.AddTool(tool, s.handle)
	}
	return s
}

// MCPServer is the server to serve over a transport.
func (s *Server) MCPServer() *server.MCPServer { return s.mcp }

// Load replaces the recorded calls answered from now on.
func (s *Server) Load(calls []Call) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending = append([]Call(nil), calls...)
	s.used = make([]bool, len(calls))
}

func (s *Server) handle(_ context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	args, err := json.Marshal(req.Params.Arguments)
	if err != nil {
		return nil, fmt.Errorf("replay: encode arguments: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	first := -1
	for i, c := range s.pending {
		if s.used[i] || c.Tool != req.Params.Name {
			continue
		}
		if sameJSON(c.Args, args) {
			s.used[i] = true
			return Result(c), nil
		}
		if first < 0 {
			first = i
		}
	}
	if first < 0 {
		return mcp.NewToolResultError(fmt.Sprintf("replay: no recorded call of %s is left", req.Params.Name)), nil
	}
	s.used[first] = true
	return Result(s.pending[first]), nil
}

// sameJSON reports whether two JSON documents hold the same value.
func sameJSON(a, b json.RawMessage) bool {
	if bytes.Equal(a, b) {
		return true
	}
	var x, y any
	if json.Unmarshal(orEmpty(a), &x) != nil || json.Unmarshal(orEmpty(b), &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return bytes.Equal(xa, ya)
}

func orEmpty(b json.RawMessage) json.RawMessage {
	if len(b) == 0 || string(b) == "null" {
		return json.RawMessage(`{}`)
	}
	return b
}
