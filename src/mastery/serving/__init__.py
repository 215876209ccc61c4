"""Serving trained models over HTTP: safe artifacts, a FastAPI prediction endpoint, fuzzing and load tests.

- :mod:`mastery.serving.artifacts`: save a scikit-learn pipeline with skops plus a JSON sidecar; load it only
  after checking its sha256 and an explicit allow-list of types (never pickle); MLflow round trip.
- :mod:`mastery.serving.titanic_model`: train the Titanic survival pipeline that the API serves.
- :mod:`mastery.serving.schemas`: the pydantic request and response models.
- :mod:`mastery.serving.predict_api`: ``create_app(artifact)``, the FastAPI app.
- :mod:`mastery.serving.compiled`: the pipeline as an ONNX graph (skl2onnx, onnxruntime), scored without pandas.
- :mod:`mastery.serving.server`: uvicorn on 127.0.0.1 in a thread or a subprocess.
- :mod:`mastery.serving.fuzz` and :mod:`mastery.serving.load`: schemathesis fuzzing and latency measurement.
"""
