"""kgllm inside other frameworks: ``kgllm.integrations.langchain`` (needs ``pip install "kgllm[langchain]"``)
and ``kgllm.integrations.mcp``, the MCP server behind ``kgllm mcp`` (needs ``pip install "kgllm[mcp]"``)."""
