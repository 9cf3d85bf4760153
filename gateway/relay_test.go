package gateway_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/sessions"
	"github.com/toolgate/toolgate/tools"
)

// relayUpstream asks its client for things while serving calls: sampling
// (after a log message), elicitation; it completes prompt arguments and
// announces updates of a subscribable resource.
func relayUpstream() *server.MCPServer {
	var s *server.MCPServer
	s = server.NewMCPServer("relay-upstream", "1",
		server.WithToolCapabilities(true), server.WithResourceCapabilities(true, true),
		server.WithPromptCapabilities(true), server.WithLogging(), server.WithCompletions(),
		server.WithPromptCompletionProvider(prefixCompleter{}))
	s.EnableSampling()
	s.AddTool(mcp.NewTool("ask"), func(ctx context.Context, _ mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		_ = s.SendNotificationToClient(ctx, "notifications/message", map[string]any{"level": "info", "data": "asking the model"})
		res, err := s.RequestSampling(ctx, mcp.CreateMessageRequest{CreateMessageParams: mcp.CreateMessageParams{
			Messages:  []mcp.SamplingMessage{{Role: mcp.RoleUser, Content: mcp.NewTextContent("the answer?")}},
			MaxTokens: 10,
		}})
		if err != nil {
			return mcp.NewToolResultError("sampling failed: " + err.Error()), nil
		}
		return mcp.NewToolResultText("sampled: " + res.Content.(mcp.TextContent).Text), nil
	})
	s.AddTool(mcp.NewTool("confirm"), func(ctx context.Context, _ mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		res, err := s.RequestElicitation(ctx, mcp.ElicitationRequest{Params: mcp.ElicitationParams{
			Message: "deploy?", RequestedSchema: map[string]any{"type": "object", "properties": map[string]any{"ok": map[string]any{"type": "boolean"}}}}})
		if err != nil {
			return mcp.NewToolResultError("elicitation failed: " + err.Error()), nil
		}
		b, _ := json.Marshal(res.Content)
		return mcp.NewToolResultText("elicited: " + string(res.Action) + " " + string(b)), nil
	})
	s.AddTool(mcp.NewTool("touch"), func(ctx context.Context, _ mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		s.SendNotificationToAllClients(mcp.MethodNotificationResourceUpdated, map[string]any{"uri": "test://counter"})
		return mcp.NewToolResultText("touched"), nil
	})
	s.AddPrompt(mcp.NewPrompt("greet", mcp.WithArgument("name")), func(context.Context, mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		return &mcp.GetPromptResult{Messages: []mcp.PromptMessage{{Role: mcp.RoleUser, Content: mcp.NewTextContent("hi")}}}, nil
	})
	s.AddResource(mcp.NewResource("test://counter", "counter"), func(context.Context, mcp.ReadResourceRequest) ([]mcp.ResourceContents, error) {
		return []mcp.ResourceContents{mcp.TextResourceContents{URI: "test://counter", Text: "1"}}, nil
	})
	return s
}

type prefixCompleter struct{}

func (prefixCompleter) CompletePromptArgument(_ context.Context, prompt string, arg mcp.CompleteArgument, _ mcp.CompleteContext) (*mcp.Completion, error) {
	var out []string
	for _, v := range []string{"alice", "albert", "bob"} {
		if prompt == "greet" && arg.Name == "name" && strings.HasPrefix(v, arg.Value) {
			out = append(out, v)
		}
	}
	return &mcp.Completion{Values: out}, nil
}

type samplingAgent struct{}

func (samplingAgent) CreateMessage(context.Context, mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
	return &mcp.CreateMessageResult{SamplingMessage: mcp.SamplingMessage{Role: mcp.RoleAssistant, Content: mcp.NewTextContent("42")}, Model: "test"}, nil
}

type elicitingAgent struct{}

func (elicitingAgent) Elicit(context.Context, mcp.ElicitationRequest) (*mcp.ElicitationResult, error) {
	return &mcp.ElicitationResult{ElicitationResponse: mcp.ElicitationResponse{Action: mcp.ElicitationResponseActionAccept, Content: map[string]any{"ok": true}}}, nil
}

// notes collects an agent's notifications.
type notes struct {
	mu   sync.Mutex
	list []mcp.JSONRPCNotification
}

func (n *notes) add(x mcp.JSONRPCNotification) {
	n.mu.Lock()
	n.list = append(n.list, x)
	n.mu.Unlock()
}

func (n *notes) has(method, text string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, x := range n.list {
		b, _ := json.Marshal(x.Params)
		if x.Method == method && strings.Contains(string(b), text) {
			return true
		}
	}
	return false
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond) // polling an async event, with a deadline
	}
}

// TestRelay runs an agent with sampling and elicitation handlers through the
// gateway, in front of an upstream over Streamable HTTP that uses them.
func TestRelay(t *testing.T) {
	up := httptest.NewServer(server.NewStreamableHTTPServer(relayUpstream()))
	t.Cleanup(up.Close)
	m, err := tools.New(tools.Config{Servers: []tools.ServerConfig{{Name: "relay", Transport: "streamable-http", URL: up.URL + "/mcp", Timeout: 10 * time.Second}}},
		tools.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	auth, err := gateway.NewAuthenticator(gateway.IdentityConfig{APIKeys: []gateway.APIKeyConfig{{Agent: "agent-1", Profile: "default", KeyEnv: "KEY1"}}},
		func(name string) (string, bool) { v, ok := testKeys[name]; return v, ok }, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(gateway.Config{}, m, gateway.Options{Logger: testLogger(t), Store: sessions.NewMemory(sessions.Options{}), Auth: auth,
		Profiles: map[string]*gateway.ProfileConfig{"default": {Tools: []string{"*"}}}})
	if err != nil {
		t.Fatal(err)
	}
	g.Sync()
	ts := httptest.NewServer(g.Handler())
	t.Cleanup(ts.Close)

	tr, err := transport.NewStreamableHTTP(ts.URL+"/mcp", transport.WithContinuousListening(),
		transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer " + testKeys["KEY1"]}))
	if err != nil {
		t.Fatal(err)
	}
	agent := client.NewClient(tr, client.WithProtocolVersion(mcp.LATEST_LEGACY_PROTOCOL_VERSION),
		client.WithSamplingHandler(samplingAgent{}), client.WithElicitationHandler(elicitingAgent{}))
	got := &notes{}
	agent.OnNotification(got.add)
	if err := agent.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = agent.Close() })
	if _, err := agent.Initialize(ctx, mcp.InitializeRequest{}); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		tool, want string
	}{
		{"relay__ask", "sampled: 42"},
		{"relay__confirm", `elicited: accept {"ok":true}`},
	}
	for _, tt := range tests {
		t.Run(tt.tool, func(t *testing.T) {
			req := mcp.CallToolRequest{}
			req.Params.Name = tt.tool
			res, err := agent.CallTool(ctx, req)
			if err != nil {
				t.Fatalf("CallTool(%q): %v", tt.tool, err)
			}
			if got := resultText(res); got != tt.want || res.IsError {
				t.Errorf("CallTool(%q) = %q (isError %v); want %q", tt.tool, got, res.IsError, tt.want)
			}
		})
	}
	t.Run("log message sent during the call", func(t *testing.T) {
		waitUntil(t, "the upstream's log message", func() bool { return got.has("notifications/message", "asking the model") })
	})

	t.Run("completion", func(t *testing.T) {
		res, err := agent.Complete(ctx, mcp.CompleteRequest{Params: mcp.CompleteParams{
			Ref: mcp.PromptReference{Type: "ref/prompt", Name: "relay__greet"}, Argument: mcp.CompleteArgument{Name: "name", Value: "al"}}})
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(res.Completion.Values, ","); got != "alice,albert" {
			t.Errorf("Complete(relay__greet, name=al) = %q; want alice,albert", got)
		}
	})

	t.Run("resource updates reach subscribers", func(t *testing.T) {
		sub := transport.JSONRPCRequest{JSONRPC: "2.0", ID: mcp.NewRequestId("sub-1"), Method: "resources/subscribe", Params: map[string]any{"uri": "test://counter"}}
		resp, err := tr.SendRequest(ctx, sub)
		if err != nil || resp.Error != nil {
			t.Fatalf("resources/subscribe = %+v, %v", resp, err)
		}
		req := mcp.CallToolRequest{}
		req.Params.Name = "relay__touch"
		if _, err := agent.CallTool(ctx, req); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, "notifications/resources/updated", func() bool { return got.has(mcp.MethodNotificationResourceUpdated, "test://counter") })
	})
}
