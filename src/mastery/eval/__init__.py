"""Evaluation sets: the questions, fixtures and scorers that labs, tests, benchmarks and apps share.

- :mod:`mastery.eval.agent_tasks`: L21's labelled agent questions, the replayed tiny set, ``answer_correct``;
- :mod:`mastery.eval.agent_api_fixtures`: L24's demo tools, scripted replies, model names and prices;
- :mod:`mastery.eval.rag_tasks`: L19's generated documents, questions and the source check;
- :mod:`mastery.eval.assistant_tasks`: the Research Assistant's labelled questions over the registered PDFs and
  ATT&CK (gold sources, key facts, unanswerables) and its scorers;
- :mod:`mastery.eval.predict_fixtures`: L25's passengers and bad requests for the prediction API;
- :mod:`mastery.eval.benign_security`: benign questions a security team asks (the guard layer's refusal set).

Labs import from here; nothing imports from :mod:`mastery.labs` (tests/test_lab_imports.py holds the line).
"""
