"""A second MCP server whose `add` clashes with demo_server's."""

from mcp.server.mcpserver import MCPServer

server = MCPServer("clash")


@server.tool()
def add(x: str, y: str) -> str:
    """Concatenates two strings."""
    return x + y


if __name__ == "__main__":
    server.run()
