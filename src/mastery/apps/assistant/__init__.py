"""The Research Assistant (L30-L32): a LangGraph brain behind FastAPI, a Streamlit UI, monitoring of every LLM call.

See :mod:`mastery.apps.assistant.events` for the contract between its parts."""
