"""The local LLM runtime: an embedded llama.cpp server, one OpenAI-compatible client for every backend, RAG.

- :mod:`mastery.llm.types`: the chat contract (``ChatModel``, ``Completion``, ``ToolCall``, ``ChatStream``);
- :mod:`mastery.llm.settings`: backend, URL, model, timeout, threads from env vars or arguments;
- :mod:`mastery.llm.server`: llama.cpp's server (xllamacpp) in a child process on 127.0.0.1;
- :mod:`mastery.llm.client`: chat / streaming chat with token counts and latency of every call;
- :mod:`mastery.llm.rag`: retrieve, prompt with numbered sources, stream, check the citations;
- :mod:`mastery.llm.fake`: the one scripted chat model for tests and tiny presets, and
  :mod:`mastery.llm.scripted`: the same fake behind an OpenAI-compatible HTTP server, with faults on demand.
"""
