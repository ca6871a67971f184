"""kgllm inside other frameworks: ``kgllm.integrations.langchain`` (needs ``pip install "kgllm[langchain]"``)."""
