"""Agents: a ReAct loop written from scratch, LangGraph workflows, a research crew, and the pieces
that keep them alive on small local models (tolerant parsing, retries, fallbacks, cost tracking)."""
