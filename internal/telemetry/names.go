package telemetry

import "go.opentelemetry.io/otel/attribute"

// ScopeName is the instrumentation scope of toolgate's spans and metrics.
const ScopeName = "github.com/toolgate/toolgate"

// Attribute keys. The first group follows the OpenTelemetry semantic
// conventions for MCP and GenAI (semconv "mcp.*", "gen_ai.*", "jsonrpc.*");
// the second is toolgate's own.
const (
	MCPMethod          = attribute.Key("mcp.method.name")
	MCPSessionID       = attribute.Key("mcp.session.id") // the MCP transport session (Mcp-Session-Id)
	MCPProtocolVersion = attribute.Key("mcp.protocol.version")
	JSONRPCRequestID   = attribute.Key("jsonrpc.request.id")
	GenAIOperation     = attribute.Key("gen_ai.operation.name")
	GenAIToolName      = attribute.Key("gen_ai.tool.name")
	GenAIToolArgs      = attribute.Key("gen_ai.tool.call.arguments")
	GenAIToolResult    = attribute.Key("gen_ai.tool.call.result")
	ErrorType          = attribute.Key("error.type")
	NetworkTransport   = attribute.Key("network.transport")
	NetworkProtocol    = attribute.Key("network.protocol.name")

	SessionID  = attribute.Key("toolgate.session.id") // toolgate's own session, not the transport's
	Agent      = attribute.Key("toolgate.agent")
	Profile    = attribute.Key("toolgate.profile")
	Decision   = attribute.Key("toolgate.decision")
	Rules      = attribute.Key("toolgate.rules")
	Flags      = attribute.Key("toolgate.flags")
	Risk       = attribute.Key("toolgate.risk")
	CallSeq    = attribute.Key("toolgate.call.seq")
	Server     = attribute.Key("toolgate.upstream.server")
	Reason     = attribute.Key("toolgate.reason")
	Result     = attribute.Key("toolgate.result")
	Labels     = attribute.Key("toolgate.tool.labels")
	Redacted   = "[redacted]"
	Credential = "credential" // the tool label whose values are never recorded
)

// Span names of toolgate's internal steps; the request span is named
// "{mcp.method.name} {target}" as the MCP conventions say.
const (
	SpanAuthenticate = "toolgate.authenticate"
	SpanAdmit        = "toolgate.admit"
	SpanPolicy       = "toolgate.policy.evaluate"
	SpanApproval     = "toolgate.approval.wait"
	SpanUpstream     = "toolgate.upstream.call"
)

// Metric names.
const (
	MetricCalls          = "toolgate.calls"
	MetricDecisionTime   = "toolgate.decision.duration"
	MetricActiveSessions = "toolgate.sessions.active"
	MetricRevocations    = "toolgate.revocations"
	MetricUpstreamUp     = "toolgate.upstream.up"
	MetricUpstreamTime   = "toolgate.upstream.duration"
	MetricStoreErrors    = "toolgate.store.errors"
	MetricPolicyReloads  = "toolgate.policy.reloads"
	MetricAuditErrors    = "toolgate.audit.errors"
)
