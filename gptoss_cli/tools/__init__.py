"""Tools for the chat: MCP servers (mcp_client), their results (results), approvals and the tool loop."""
