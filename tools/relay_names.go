package tools

// publicName is the catalog name of an upstream tool, resource or prompt:
// namespaced, unless the server is configured unprefixed.
func (m *Manager) publicName(cfg ServerConfig, upstreamName string) string {
	if cfg.Unprefixed {
		return upstreamName
	}
	return cfg.Name + m.sep + upstreamName
}
