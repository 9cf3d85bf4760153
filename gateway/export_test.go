package gateway

import "net/http"

// MCPHandlersForTest returns two versions of the gateway's /mcp handler:
// slow sends every request through mcp-go; fastOnly answers only what the
// direct path for tool calls takes and 599 to the rest.
func (g *Gateway) MCPHandlersForTest() (slow, fastOnly http.Handler) {
	declined := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(599) })
	slow = edgeHandler(g.traceHandler(g.authHandler(g.streamable)), g.cfg.MaxBodyBytes, g.cfg.MaxDepth)
	fastOnly = edgeHandler(g.traceHandler(g.authHandler(g.fastCalls(declined))), g.cfg.MaxBodyBytes, g.cfg.MaxDepth)
	return slow, fastOnly
}
